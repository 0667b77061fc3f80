# Strongroom: build, test, demo and benchmark. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
VENV_CHECKOV := .venv-checkov
VENV_LOCALSTACK := .venv-localstack
VENV_CHART := .venv-chart
PYTHON ?= python3

.PHONY: all build deps tf-deps chart-deps lint unit test tf-check chart-check image image-check e2e demo bench clean

all: build

build:
	cargo build --workspace --all-targets

## System packages (PostgreSQL 15, Ceph RGW, pigz...) and the project venv (moto, awscli).
deps: $(VENV)/.installed
	e2e/harness/install-deps.sh

$(VENV)/.installed: e2e/harness/requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r e2e/harness/requirements.txt
	touch $@

## checkov and LocalStack, each in its own venv (their pins conflict with moto's; LocalStack needs
## Python 3.13).
tf-deps: $(VENV_CHECKOV)/.installed $(VENV_LOCALSTACK)/.installed

$(VENV_CHECKOV)/.installed: e2e/harness/requirements-checkov.txt
	rm -rf $(VENV_CHECKOV)
	$(PYTHON) -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/pip install --quiet -r e2e/harness/requirements-checkov.txt
	touch $@

$(VENV_LOCALSTACK)/.installed: e2e/harness/requirements-localstack.txt
	rm -rf $(VENV_LOCALSTACK)
	"$$(e2e/harness/python313.sh)" -m venv $(VENV_LOCALSTACK)
	$(VENV_LOCALSTACK)/bin/pip install --quiet -r e2e/harness/requirements-localstack.txt
	touch $@

## The chart tests' venv (real Helm through helm-python-sdk, kubernetes-validate, pytest) and
## the prometheus-operator schemas (npm, locked by e2e/chart/package-lock.json).
chart-deps: $(VENV_CHART)/.installed e2e/chart/node_modules/.installed

$(VENV_CHART)/.installed: e2e/chart/requirements.txt
	rm -rf $(VENV_CHART)
	$(PYTHON) -m venv $(VENV_CHART)
	$(VENV_CHART)/bin/pip install --quiet -r e2e/chart/requirements.txt
	touch $@

e2e/chart/node_modules/.installed: e2e/chart/package-lock.json
	cd e2e/chart && npm ci --silent --no-audit --no-fund
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Unit tests only: no servers needed.
unit:
	cargo test --workspace --lib --bins

## Everything: lints, unit tests, and integration tests against real PostgreSQL, Ceph RGW and
## moto, started on 127.0.0.1 for the run and stopped after it.
test: deps lint
	cargo build --workspace --all-targets
	e2e/harness/with-servers.sh cargo test --workspace --no-fail-fast
	$(MAKE) tf-check
	$(MAKE) chart-check
	$(MAKE) e2e

## The Terraform module: fmt, validate, terraform test, checkov, apply against LocalStack, and its
## role policies proven on Ceph RGW with real requests (e2e/terraform/check.sh).
tf-check: deps tf-deps
	cargo build --bin strongroom
	SERVERS="postgres rgw localstack" e2e/harness/with-servers.sh e2e/terraform/check.sh target/debug/strongroom

## The Helm chart without a cluster: strict lint and render over chart/ci/ and chart/examples/,
## Kubernetes schemas 1.29-1.37, prometheus-operator schemas, checkov, and the contract with the
## agent's CLI (e2e/chart/test_chart.py).
chart-check: chart-deps tf-deps
	cargo build --bin strongroom
	STRONGROOM=$(CURDIR)/target/debug/strongroom PATH="$(CURDIR)/$(VENV_CHART)/bin:$$PATH" \
	  $(VENV_CHART)/bin/pytest -q -p no:cacheprovider e2e/chart/test_chart.py

## The agent's OCI image from Debian packages, without a container engine (image/build.sh):
## target/image/oci and target/image/strongroom.oci.tar. Settings: image/image.env.
image: deps
	cargo build --release --bin strongroom
	image/build.sh target/release/strongroom

## The image's config, files and size (e2e/image/test_image.py).
image-check: image chart-deps
	PATH="$(CURDIR)/$(VENV_CHART)/bin:$$PATH" $(VENV_CHART)/bin/pytest -q -s -p no:cacheprovider e2e/image/test_image.py

## The chart's rendered pods run from the image by the test kubelet (e2e/pods/kubelet.py, crun)
## against PostgreSQL and Ceph RGW (e2e/pods/test_pods.py).
e2e: image-check
	cargo build --bin strongroom
	SERVERS="postgres rgw clickhouse" STRONGROOM=$(CURDIR)/target/debug/strongroom \
	  e2e/harness/with-servers.sh $(VENV_CHART)/bin/pytest -q -p no:cacheprovider e2e/pods/test_kubelet.py e2e/pods/test_pods.py

## A local PostgreSQL with sample data and a local Ceph RGW with an Object-Lock bucket; one
## backup, the listing, and the manifest.
demo: deps
	cargo build --bin strongroom
	SERVERS="postgres rgw" e2e/harness/with-servers.sh e2e/demo.sh target/debug/strongroom

## The benchmark (not a test): backup/restore vs pg_dump|gzip|aws s3 cp, pigz and gunzip|psql; the
## agent under HTTP load; ClickHouse backup through the agent vs the same BACKUP run directly.
bench: deps
	cargo build --release --bin strongroom
	PG_STANDBY=no SERVERS="postgres rgw" e2e/harness/with-servers.sh e2e/bench/bench.sh target/release/strongroom
	RGW_OBJECTSTORE=bluestore RGW_BLUESTORE_BYTES=51539607552 SERVERS="rgw clickhouse" \
	  e2e/harness/with-servers.sh e2e/bench/clickhouse.sh target/release/strongroom

clean:
	cargo clean
	rm -rf $(VENV)
