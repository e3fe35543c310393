# The two commands of the README: `make run` (demo) and `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint system-deps clean wheelhouse dist image

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests talk to for real, each checked by the command it provides:
# mosquitto (MQTT broker), tinyproxy (HTTP proxy of test_http_extras), chromium (the headless
# browser of the console tests), socat (the serial line, a pty pair, of test_modbus_rtu).
# What is missing is installed at once, after one `apt-get update`.
DEBIAN_DEPS := mosquitto:/usr/sbin/mosquitto tinyproxy:/usr/bin/tinyproxy chromium:/usr/bin/chromium socat:/usr/bin/socat
system-deps:
	@missing=""; for dep in $(DEBIAN_DEPS); do \
		pkg=$${dep%%:*}; bin=$${dep#*:}; \
		command -v $$pkg >/dev/null 2>&1 || test -x $$bin || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing from Debian:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

run: $(STAMP)
	$(BIN)/datonis-edge demo

test: $(STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest

bench: $(STAMP) system-deps
	@missing=""; for pkg in wrk strace; do command -v $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

VERSION = $(shell $(PY) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
IMAGE ?= datonis-edge
BUNDLE := dist/datonis-edge-$(VERSION)

# the wheels of the gateway and of every dependency (for offline installs and the image build)
wheelhouse: $(STAMP)
	rm -rf build/wheelhouse
	$(BIN)/pip wheel -q --wheel-dir build/wheelhouse .
	$(BIN)/pip download -q --dest build/wheelhouse setuptools wheel

# the classic-install release bundle: wheels, both scripts, the unit, the docs
dist: wheelhouse
	rm -rf $(BUNDLE) $(BUNDLE).tar.gz
	mkdir -p $(BUNDLE)/wheels $(BUNDLE)/docs
	cp build/wheelhouse/*.whl $(BUNDLE)/wheels/
	rm -f $(BUNDLE)/wheels/setuptools-*.whl $(BUNDLE)/wheels/wheel-*.whl
	cp packaging/install_edge_service.sh packaging/upgrade_edge_service.sh packaging/edge_lib.sh packaging/datonis-edge.service $(BUNDLE)/
	cp docs/*.md $(BUNDLE)/docs/
	echo $(VERSION) > $(BUNDLE)/VERSION
	tar -C dist -czf $(BUNDLE).tar.gz datonis-edge-$(VERSION)
	@echo "bundle: $(BUNDLE).tar.gz ($$(du -h $(BUNDLE).tar.gz | cut -f1))"

# the Docker image, built with podman (no Docker engine here); debian:bookworm-slim is made
# locally from debootstrap by ../shared/tools/debian-base-image
image: wheelhouse
	../shared/tools/debian-base-image
	. ../shared/tools/container-env && podman build --pull=never --format docker -q -f packaging/Dockerfile \
		--build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .
	@. ../shared/tools/container-env && podman image prune -f > /dev/null && echo "image: $(IMAGE):$(VERSION) $$(podman image inspect --format '{{.Size}}' $(IMAGE):$(VERSION) | numfmt --to=si)B"

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
