# Two commands: `make run` brings the product up, `make test` runs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test fuzz bench clean lab-kvm

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# Debian's libvirt and libnbd bindings, when this machine has them (scripts/kvm-host).
	@if [ -e /usr/lib/python3/dist-packages/libvirt.py ]; then scripts/kvm-host bindings $(VENV); fi
	touch $@

# Web server, the django-q2 worker (restarted when it dies: `manage.py worker`) and the lab's
# writers in one terminal. Ctrl-C stops them all and waits until they have stopped (the worker
# gives a running job 10 s, then kills it).
run: $(VENV)/.installed
	$(PY) manage.py migrate --no-input
	$(PY) manage.py sync_schedules
	$(PY) manage.py bootstrap
	$(PY) manage.py collectstatic --no-input -v 0
	@trap 'trap "" INT TERM; trap - EXIT; kill 0; wait' INT TERM EXIT; \
	$(PY) manage.py worker & \
	$(PY) manage.py lab writers & \
	$(PY) manage.py runserver --noreload $(HOST):$(PORT)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy engine portal vaults jobs security inventory policies identity
	$(VENV)/bin/lint-imports
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The KVM lab (needs root): QEMU + libvirtd on this machine, two domains under var/kvm-lab
# (kvm-web-01, a real guest with the QEMU guest agent; kvm-db-01, OS-less) and the host
# kvm-lab that backs them up through libvirt. Re-running reuses what exists. `make run` then
# shows them; nothing else needs libvirt.
lab-kvm:
	scripts/kvm-host install
	scripts/kvm-host start
	$(MAKE) $(VENV)/.installed
	scripts/kvm-host bindings $(VENV)
	$(PY) manage.py migrate --no-input
	$(PY) manage.py bootstrap
	$(PY) manage.py lab kvm

# Property-based fuzzing of every API operation from the OpenAPI schema: no 5xx allowed.
fuzz: $(VENV)/.installed
	$(VENV)/bin/pytest scripts/api_fuzz.py -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) bench/engine_vs_peers.py

clean:
	rm -rf $(VENV) var
