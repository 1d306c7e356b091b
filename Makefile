# Two commands, both idempotent, on a fresh Debian 12 machine as root:
#   make run   - set up everything and run the cloud in the foreground (Ctrl-C stops it)
#   make test  - set up everything and run the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
export CLOUDMGR_DATA_DIR ?= $(CURDIR)/var
export CLOUDMGR_LISTEN ?= 127.0.0.1:8000
export CLOUDMGR_HOSTNAME ?= $(shell hostname)
export CLOUDMGR_TESTVM_IMAGE ?= $(CURDIR)/var/build/testvm.qcow2
TEST_DATABASE_URL ?= postgres://cloudmgr:cloudmgr@127.0.0.1:5432/cloudmgr

.PHONY: run test test-postgres host host-test venv image bootstrap bench

run: host venv image bootstrap
	@echo
	@echo "cloudmgr is starting on http://$(CLOUDMGR_LISTEN)"
	@echo "  portal:   http://$(CLOUDMGR_LISTEN)/"
	@echo "  API:      http://$(CLOUDMGR_LISTEN)/identity/v3 (OS_AUTH_URL), schema at /api/docs/"
	@echo "  log in as 'admin' with the password printed when this cloud was first bootstrapped"
	@echo "  (lost it? .venv/bin/python manage.py changepassword admin)"
	@echo
	exec $(BIN)/honcho start -f Procfile

test: host-test venv image
	@echo "== concurrency and database dialect tests on PostgreSQL"
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -m "concurrency or database" -q -p no:cacheprovider
	@echo "== unit tests (SQLite), on two workers: each core runs a Django test process"
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --durations=5 tests/unit
	@echo "== host agents and the running cloud end to end (real libvirt, QEMU, kernel networking)"
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15 tests/agents tests/e2e

# The unit tests on PostgreSQL, every one (about 3x their time on SQLite): `make test` runs only
# the concurrency and `database` tests there.
test-postgres: host-test venv
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

host:
	scripts/host-setup.sh

host-test:
	scripts/host-setup.sh --postgres

# nftables' Python binding comes only as a Debian package (python3-nftables, pure Python over
# libnftables): the venv gets that one package, not the whole of the system's site-packages.
venv: $(VENV)/.installed
	ln -sfn /usr/lib/python3/dist-packages/nftables $(VENV)/lib/python3.11/site-packages/nftables

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "cloudmgr needs Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

image:
	scripts/build-testvm.sh $(CLOUDMGR_TESTVM_IMAGE)

bootstrap: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py cloud_bootstrap --testvm-image $(CLOUDMGR_TESTVM_IMAGE)

bench: host venv image
	$(BIN)/python bench/boot.py
