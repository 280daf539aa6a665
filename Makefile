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

.PHONY: demo serve test build tests soak-short bootstrap check-template lint soak

# One build for everything: every target of the workspace, features resolved once, tests included, so make test,
# make demo, the soak and the local pipeline's functions all run what it made (`cargo run -p X` or a per-function
# build would resolve them again and compile ~100 crates a second time). The same arguments as po-sync-local's
# `WORKSPACE_BUILD`, plus the benchmarks, compiled in the dev profile only so clippy's lints see them (`cargo
# bench` builds them with the release profile) and never run by `cargo test`.
TARGETS := --workspace --lib --bins --tests --examples
BUILD := cargo build $(TARGETS) --benches --locked
BIN := $(CARGO_TARGET_DIR)/debug

# clippy's lints run inside that build: cargo hands the workspace's crates (never the dependencies) to
# clippy-driver, the way `cargo clippy` does. One compile gives the binaries and the lints, where `cargo clippy`
# would check the ~360 dependencies again (3.5 of CI's CPU-minutes). A build through the wrapper keeps its own
# artifacts apart from a plain `cargo build`'s, so every target here uses it and they all share one build.
# Without clippy installed they build with rustc alone, and `make lint` says what is missing.
CLIPPY_DRIVER := $(shell clippy-driver --version >/dev/null 2>&1 && command -v clippy-driver)
export RUSTC_WORKSPACE_WRAPPER := $(CLIPPY_DRIVER)

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
# On two cores, each CPU-bound step runs beside steps that mostly wait: the Python installs and template checks
# (network, disk) beside the build (which lints), then the tests beside the short soak (both wait on moto and the
# local pipeline more than they compute) and the lint verdict.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target check-template build
	$(MAKE) --no-print-directory -j3 --output-sync=target lint tests soak-short

build:
	$(BUILD)

tests:
	cargo test $(TARGETS) --locked
	cargo test --workspace --doc --locked

soak-short:
	$(BUILD)
	$(BIN)/po-sync-soak --webhooks 300 --seed 7 --require-each-fault 2

## lint: formatting, and no warning from rustc or clippy (warnings are errors, as `cargo clippy -- -D warnings`).
## The build ran clippy's lints; run again, it compiles only what changed and replays every warning of every
## target, so a warning in any line of the build's diagnostics fails.
lint:
	cargo fmt --all --check
	@test -n "$(CLIPPY_DRIVER)" || { echo "lint: clippy is not installed (rustup component add clippy)" >&2; exit 1; }
	@mkdir -p $(CARGO_TARGET_DIR)
	@$(BUILD) --message-format short 2> $(CARGO_TARGET_DIR)/lint.log || { cat $(CARGO_TARGET_DIR)/lint.log; exit 1; }
	@if grep -E '^(warning|error)|: (warning|error)' $(CARGO_TARGET_DIR)/lint.log; then \
	    echo "lint: warnings are errors (the lines above; $(CARGO_TARGET_DIR)/lint.log has the build's output)" >&2; \
	    exit 1; \
	fi

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
