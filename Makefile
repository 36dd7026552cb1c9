# The two commands (`make demo`, `make test`) set everything up themselves on a fresh machine.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OUT    ?= demo_out

export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast test-containers bench lint lock isvc pipeline image

# ONE pip command resolves every dependency together (a separate kserve[storage] install breaks
# dvc-s3's botocore pin); constraints.txt pins the resolved set.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/interactavatar demo --out $(OUT)

# Everything but the container tests, which build the image first (5.5 minutes cold on 2 idle
# cores, 9 in all): they are `make test-containers`, and .ci/run runs both.
test: $(STAMP)
	$(PY) -m pytest -m "not container"

test-containers: $(STAMP)
	$(PY) -m pytest -m container tests/container

test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.run --out BENCHMARKS.md

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# The project image with podman on a debootstrapped Debian base and the CPU torch wheel (no
# registry is reachable here; docker/podman-host.sh sets the machine up, as root). Clusters build
# the Dockerfile with its defaults instead (see its header).
image:
	docker/build-image.sh

# The InferenceService manifest under k8s/ is generated from the kserve SDK's models (a test
# checks the committed file is current).
isvc: $(STAMP)
	$(VENV)/bin/interactavatar serve manifest > k8s/serving/inferenceservice.yaml.tmp
	mv k8s/serving/inferenceservice.yaml.tmp k8s/serving/inferenceservice.yaml

# The compiled pipeline (pipelines/) and component (components/) YAMLs are committed; a test
# recompiles them and compares.
pipeline: $(STAMP)
	$(VENV)/bin/interactavatar pipeline compile

# Regenerate constraints.txt from the current environment after changing pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt
