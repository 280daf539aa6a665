# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export CARGO_TERM_COLOR ?= never

.PHONY: demo test bootstrap

## demo: run po-sync on Komet's documented sample and print the report and the AppZen body
demo:
	cargo run --quiet -p po-sync-shared --example doc-sample

## test: install what the tests need (into .venv) and run every test
test: bootstrap
	cargo test --workspace --all-targets --locked
	cargo test --workspace --doc --locked

bootstrap:
	scripts/bootstrap
