# smart-backend-operator — developer entry points.
#
#   make test        everything the CI runs: lint, then all tests against a real
#                    control plane and a real OAuth server (builds what is missing)
#   make lint        cargo fmt --check and clippy with warnings denied
#   make cluster-up / cluster-down   the local control plane on its own

SHELL := /bin/bash
CONTROL_PLANE := tests/cluster/control-plane
OIDC_DIR := tests/oidc

.PHONY: test lint unit crds oidc-deps cluster-up cluster-down

test: lint oidc-deps cluster-up
	cargo test --locked --all-targets

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo test --locked --lib

# Regenerate the CRD from the Rust types, for crds/ and the chart.
crds:
	cargo run --quiet --locked -- crd > crds/smartbackendclients.smartbackend.dev.yaml
	cp crds/smartbackendclients.smartbackend.dev.yaml charts/smart-backend-operator/files/

# npm ci only when the lockfile changed since the last install.
oidc-deps: $(OIDC_DIR)/node_modules/.installed
$(OIDC_DIR)/node_modules/.installed: $(OIDC_DIR)/package-lock.json
	npm ci --prefix $(OIDC_DIR) --no-audit --no-fund
	touch $@

cluster-up:
	$(CONTROL_PLANE) up

cluster-down:
	$(CONTROL_PLANE) down
