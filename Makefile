# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv when missing and installs the package with what it needs.
# constraints.txt pins the versions tested together (pip's resolver otherwise backtracks for
# minutes between boto3 and aiobotocore releases); pyproject.toml keeps the lower bounds.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test install labelstudio browser docker studio bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install -c constraints.txt -e '.[all]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/visionloop demo

labelstudio:
	bash scripts/labelstudio.sh install

# Debian's chromium for the page's browser tests (apt-get, as root)
browser:
	bash scripts/browser.sh

# a Docker engine for the container tests (apt-get docker.io debootstrap docker-compose, dockerd; as root)
docker:
	bash scripts/docker.sh start

# the project's own Label Studio on 127.0.0.1:8080 (README: "One round by hand")
studio: $(STAMP) labelstudio
	$(VENV)/bin/visionloop label studio

# stops afterwards only a dockerd that scripts/docker.sh started
test: $(STAMP) labelstudio browser docker
	$(PY) -m pytest -q tests; rc=$$?; bash scripts/docker.sh stop; exit $$rc

bench: $(STAMP)
	$(PY) bench/import_bench.py
	$(PY) bench/serve_bench.py
	$(PY) bench/train_overhead.py

clean:
	rm -rf $(VENV) .visionloop .pytest_cache
