# Attested Nix builds — top-level tasks. Every target that needs tools calls `setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(CURDIR)
CARGO ?= cargo
CARGO_HOME ?= $(HOME)/.cargo
AGENT_TARGET := x86_64-unknown-none
AGENT_ELF := target/$(AGENT_TARGET)/firmware/agent
AGENT_BIN := target/agent.bin
REFERENCE := target/reference-measurements.json
APT_PACKAGES := qemu-system-x86 nix-bin busybox-static binutils ovmf python3-venv openssh-server openssh-client
export AGENT_BIN := $(ROOT)/$(AGENT_BIN)

# Reproducibility: no checkout path, no Cargo home path, no build id in the image.
AGENT_RUSTFLAGS := --remap-path-prefix=$(ROOT)=/agent-src \
	--remap-path-prefix=$(CARGO_HOME)=/cargo \
	--remap-path-prefix=$(HOME)/.rustup=/rustup \
	-C link-arg=-Tagent/linker.ld -C link-arg=--build-id=none \
	-C relocation-model=static -C code-model=kernel

.PHONY: help setup agent agent-dev agent-fault-test agent-overflow-test agent-syscall-test test demo demo-remote bench fuzz fuzz-tools fuzz-cmin audit clean

help:
	@echo "make demo   - attested build of an example derivation (boots the agent under KVM or TCG)"
	@echo "make demo-remote - nix-build through the loader as an SSH remote builder, then verify-path"
	@echo "make test   - the full test suite (what CI runs)"
	@echo "make bench  - benchmarks (figures go to docs/)"
	@echo "make agent  - build the reproducible agent image $(AGENT_BIN)"
	@echo "make agent-dev - the development image (Ping, Bulk, Exec) $(AGENT_DEV_BIN)"
	@echo "make fuzz   - run each fuzz target for FUZZ_SECONDS (default 60); make fuzz-cmin minimises the corpora"
	@echo "make audit  - the guest's TCB: own lines per layer, every unsafe site, image dependencies"

# Idempotent, and quick when everything is already there.
setup:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@rustup target list --installed 2>/dev/null | grep -q '^$(AGENT_TARGET)$$' || rustup target add $(AGENT_TARGET)

agent: setup
	RUSTFLAGS="$(AGENT_RUSTFLAGS)" $(CARGO) build -p agent --bin agent --features firmware \
	  --profile firmware --target $(AGENT_TARGET) --locked
	objcopy -O binary $(AGENT_ELF) $(AGENT_BIN)
	@echo "agent image: $(AGENT_BIN) ($$(stat -c %s $(AGENT_BIN)) bytes)"
	@# Its reference measurements (SNP launch digest with the verifier's pinned launch parameters,
	@# TDX MRTD), derived from these bytes: what `measurement-tool verify` expects by default.
	$(CARGO) run -q --locked -p measurement-tool -- reference $(AGENT_BIN) --out $(REFERENCE)

# The development image: the agent plus Ping, bulk transfers and Exec (agent/src/dev.rs), for
# `loader exec`/`loader ping`, the sandbox and channel tests and the benchmarks. Its own target
# directory, so the attested image's build never sees the feature; its measurement differs.
AGENT_DEV_BIN := target/agent-dev.bin
agent-dev: setup
	RUSTFLAGS="$(AGENT_RUSTFLAGS)" CARGO_TARGET_DIR=target/dev $(CARGO) build -p agent --bin agent \
	  --features dev --profile firmware --target $(AGENT_TARGET) --locked
	objcopy -O binary target/dev/$(AGENT_TARGET)/firmware/agent $(AGENT_DEV_BIN)
	@echo "development image: $(AGENT_DEV_BIN) ($$(stat -c %s $(AGENT_DEV_BIN)) bytes)"

# A test-only image that faults on purpose (never shipped): its own target dir, so the release
# image's build is never touched by test features.
agent-fault-test: setup
	RUSTFLAGS="$(AGENT_RUSTFLAGS)" CARGO_TARGET_DIR=target/fault-test $(CARGO) build -p agent --bin agent \
	  --features fault-test --profile firmware --target $(AGENT_TARGET) --locked
	objcopy -O binary target/fault-test/$(AGENT_TARGET)/firmware/agent target/agent-fault-test.bin

# Another test-only image: it overflows its boot stack on purpose (tests/tests/ring0.rs).
agent-overflow-test: setup
	RUSTFLAGS="$(AGENT_RUSTFLAGS)" CARGO_TARGET_DIR=target/overflow-test $(CARGO) build -p agent --bin agent \
	  --features stack-overflow-test --profile firmware --target $(AGENT_TARGET) --locked
	objcopy -O binary target/overflow-test/$(AGENT_TARGET)/firmware/agent target/agent-overflow-test.bin

# And one that takes system calls through SYSCALL, as in a TD (tests/tests/ring0.rs).
agent-syscall-test: setup
	RUSTFLAGS="$(AGENT_RUSTFLAGS)" CARGO_TARGET_DIR=target/syscall-test $(CARGO) build -p agent --bin agent \
	  --features syscall-entry-test --profile firmware --target $(AGENT_TARGET) --locked
	objcopy -O binary target/syscall-test/$(AGENT_TARGET)/firmware/agent target/agent-syscall-test.bin

test: agent agent-dev agent-fault-test agent-overflow-test agent-syscall-test
	$(CARGO) test --workspace --locked

# The main job: an attested build of examples/hello.nix in a fresh agent (KVM if /dev/kvm works,
# else TCG; no TEE), its unattested evidence checked with --allow-unattested (and labelled as such),
# and the same derivation built by Nix for comparison.
DEMO := target/demo
demo: agent
	$(CARGO) build -q --locked -p loader -p measurement-tool
	@set -e; drv=$$(nix-instantiate examples/hello.nix); \
	echo "== loader build $$drv"; \
	rm -rf $(DEMO)/result; \
	target/debug/loader build "$$drv" --out $(DEMO)/result --agent $(AGENT_BIN); \
	echo "== measurement-tool verify $(DEMO)/result/evidence.json --nar $(DEMO)/result/out.nar --allow-unattested"; \
	echo "   (UNATTESTED: this demo runs without a TEE, so the evidence is 'none' and only --allow-unattested"; \
	echo "    accepts it; it is reported as NOT verified. TEE evidence is checked against the pinned"; \
	echo "    measurement in target/reference-measurements.json: docs/verification.md)"; \
	target/debug/measurement-tool verify $(DEMO)/result/evidence.json --nar $(DEMO)/result/out.nar --allow-unattested; \
	echo "== the statement (in-toto v1, SLSA provenance v1; REPORT_DATA = SHA-512 of these bytes)"; \
	python3 -c 'import base64,json,sys; b=json.load(open(sys.argv[1])); print(json.dumps(json.loads(base64.b64decode(b["statement"])), indent=2))' $(DEMO)/result/evidence.json; \
	echo "== Nix's own sandboxed build of the same derivation, for comparison"; \
	out=$$(nix-store --realise "$$drv" --option sandbox true --option substituters "" 2>/dev/null); \
	echo "nix-store --realise: $$out NAR $$(nix-store -q --hash $$out)"; \
	echo "loader build:        $$out NAR sha256:$$(nix-hash --type sha256 --to-base32 $$(sha256sum $(DEMO)/result/out.nar | cut -d' ' -f1))"

# An unmodified nix-build using the loader as its remote builder over SSH (docs/hosting.md).
demo-remote: agent
	$(CARGO) build -q --locked -p loader -p measurement-tool
	sh tests/demo-remote.sh

bench: agent agent-dev
	$(CARGO) run -q --release -p integration-tests --bin bench --locked | tee target/bench-boot.md
	$(CARGO) run -q --release -p integration-tests --bin bench_nar --locked | tee target/bench-nar.md
	$(CARGO) run -q --release -p integration-tests --bin bench_build --locked | tee target/bench-build.md
	$(CARGO) run -q --release -p integration-tests --bin bench_sandbox --locked | tee target/bench-sandbox.md
	$(CARGO) run -q --release -p integration-tests --bin bench_remote --locked | tee target/bench-remote.md
	$(CARGO) run -q --release -p integration-tests --bin bench_toolchain --locked | tee target/bench-toolchain.md
	$(CARGO) run -q --release -p integration-tests --bin bench_sha256 --locked | tee target/bench-sha256.md
	$(CARGO) run -q --release -p integration-tests --bin bench_exits --locked | tee target/bench-exits.md

# Each fuzz target (fuzz/fuzz_targets/*.rs) for FUZZ_SECONDS with libFuzzer (cargo-fuzz, nightly
# toolchain; both installed if missing). The committed corpus fuzz/corpus/<target> seeds the run;
# what libFuzzer finds goes to target/fuzz-corpus/<target>, crashes to fuzz/artifacts/<target>.
# `make fuzz-cmin` merges both into the minimal set in fuzz/corpus. The stable short run of every
# target is tests/tests/fuzz_corpus.rs (part of `make test`); figures are in docs/fuzzing.md.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
FUZZ_FLAGS ?= -rss_limit_mb=2048 -timeout=10
# No AddressSanitizer: the agent's library forbids `unsafe`, and without ASan libFuzzer runs about
# twice as many executions (overflow checks and debug assertions stay on).
FUZZ_BUILD ?= -s none
fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

fuzz: setup fuzz-tools
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  mkdir -p target/fuzz-corpus/$$t; \
	  (cd fuzz && cargo +nightly fuzz run $(FUZZ_BUILD) $$t ../target/fuzz-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) -print_final_stats=1) || exit 1; \
	done

# Minimises each committed corpus together with what `make fuzz` found (libFuzzer -merge=1: the
# smallest set with the same coverage), in place.
fuzz-cmin: fuzz-tools
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz-cmin: $$t"; \
	  rm -rf target/fuzz-cmin/$$t && mkdir -p target/fuzz-cmin/$$t target/fuzz-corpus/$$t && \
	  (cd fuzz && cargo +nightly fuzz run $(FUZZ_BUILD) $$t ../target/fuzz-cmin/$$t corpus/$$t ../target/fuzz-corpus/$$t -- \
	    -merge=1 $(FUZZ_FLAGS)) || exit 1; \
	  rm -rf fuzz/corpus/$$t && cp -r target/fuzz-cmin/$$t fuzz/corpus/$$t; \
	done

# The guest's trusted computing base, counted from the source and the firmware build's dep-info
# (docs/audit.md says how to read it).
audit: agent
	$(CARGO) run -q --locked -p integration-tests --bin audit | tee target/audit.md

clean:
	$(CARGO) clean
