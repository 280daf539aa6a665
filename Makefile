# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export CARGO_TERM_COLOR ?= never
export CARGO_TARGET_DIR ?= $(CURDIR)/target
# A clean CI build gains nothing from incremental compilation's bookkeeping.
ifdef CI
export CARGO_INCREMENTAL ?= 0
endif

.PHONY: demo serve test build tests-and-soak bootstrap check-template lint soak

# One build for everything: every target of the workspace but the benchmarks (criterion's, built by `cargo bench`;
# clippy checks them), features resolved once, tests included, so make test, make demo, the soak and the local
# pipeline's functions all run what it made (`cargo run -p X` or a per-function build would resolve them again and
# compile ~100 crates a second time). The same arguments as po-sync-local's `WORKSPACE_BUILD`.
TARGETS := --workspace --lib --bins --tests --examples
BUILD := cargo build $(TARGETS) --locked
BIN := $(CARGO_TARGET_DIR)/debug

## demo: run the whole pipeline locally (moto, AppZen sandbox, the three functions beside cargo lambda watch)
## on Komet's documented sample and a clean PO, print what happened, stop everything
demo:
	$(BUILD)
	$(BIN)/po-sync-local run

## serve: the same local pipeline, left running for your own curl requests; cargo lambda watch rebuilds and
## restarts a function when its code changes; Ctrl-C stops it
serve:
	$(BUILD)
	$(BIN)/po-sync-local serve

## test: install what the tests need (into .venv) and run every test
# On two cores, each CPU-bound step runs beside one that mostly waits: the Python installs and template checks
# (network, disk) beside the build, then clippy beside the tests and the short soak (which wait on moto and the
# local pipeline more than they compute).
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target check-template build
	$(MAKE) --no-print-directory -j2 --output-sync=target lint tests-and-soak

build:
	$(BUILD)

tests-and-soak:
	cargo test $(TARGETS) --locked
	cargo test --workspace --doc --locked
	$(BIN)/po-sync-soak --webhooks 300 --seed 7 --require-each-fault 2

## lint: formatting and clippy, warnings are errors. clippy's checks share nothing with a build, so they have a
## target directory of their own, and never wait for a build's lock (nor make one wait).
lint:
	cargo fmt --all --check
	CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/clippy cargo clippy --workspace --all-targets --locked -- -D warnings

bootstrap:
	scripts/bootstrap

## check-template: lint the SAM template (offline) and test the properties po-sync relies on; any finding fails
## (checkov: every failed check fails; skips are on their resource in the template, each with its reason)
check-template: bootstrap
	cfn-lint --include-checks I -- infra/template.yaml
	sam validate --lint --template infra/template.yaml --region us-east-1
	env -u BC_API_KEY -u PRISMA_API_URL CKV_SKIP_PACKAGE_UPDATE_CHECK=true .venv-checkov/bin/checkov \
	    --file infra/template.yaml --framework cloudformation secrets --skip-download --compact --quiet
	python -m unittest discover -s infra/tests -v

## soak: the long fault-injection soak with its accounting (docs/reliability.md); SOAK_ARGS to change it,
## e.g. make soak SOAK_ARGS="--webhooks 5000 --seed 9"; the report is also written to target/soak-report.json.
## SOAK_LONG comes first, so SOAK_ARGS can override it: time 60x faster than AWS (a minute is a second) and the
## template's MaxReceiveCount (30), so the 90-minute AppZen outage and the failing PO's 4 hours (240 s) wait within
## the 26-hour horizon and nothing is parked; a drain may wait out a ledger claim's local 16-minute lease.
SOAK_ARGS ?= --webhooks 2000 --seed 7
SOAK_LONG := --time-scale 60 --max-receive-count 30 --failing-po-seconds 240 --settle-seconds 1200
soak: bootstrap
	$(BUILD)
	$(BIN)/po-sync-soak $(SOAK_LONG) $(SOAK_ARGS) --json target/soak-report.json
