# runnerfleet — `make demo` and `make test` are the two entry points (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=



.PHONY: release image test-image chaos test-slow help venv cluster-binaries crds docs chart-crds lint format test bench bench-fleet test-unit test-cluster demo cluster-up cluster-down clean

help:
	@echo "make demo              local control plane + (as it lands) operator, fake GitHub, runners"
	@echo "make test              lint (ruff, mypy --strict, import-linter) then the whole pytest suite"
	@echo "make cluster-binaries  build etcd, kube-*, kubectl and kwok from pinned Go modules (cached)"
	@echo "make crds | docs       regenerate crds/ (and the chart's copy) and docs/reference/crds.md"
	@echo "make chaos             the chaos suite at full size: bench/chaos.json, docs/reliability.md"
	@echo "make release           dist/: packaged chart, install.yaml, SHA256SUMS (IMAGE_DIGEST=sha256:... pins the image)"
	@echo "make image             the OCI image without Docker: dist/image, dist/image.digest, SBOM (docs/image.md)"
	@echo "make test-image        smoke-test the built image in a chroot (not part of make test)"
	@echo "make lint | format | test-unit | test-cluster | clean"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

cluster-binaries:
	tools/build-binaries.sh

crds: venv
	$(BIN)/python tools/gen_crds.py
	cp crds/*.yaml charts/runnerfleet/crds/

docs: crds
	$(BIN)/python tools/gen_crd_docs.py

chart-crds:
	cp crds/*.yaml charts/runnerfleet/crds/

lint: venv
	$(BIN)/python tools/gen_crds.py --check
	$(BIN)/python tools/gen_crd_docs.py --check
	@diff -r crds charts/runnerfleet/crds >/dev/null || { echo "charts/runnerfleet/crds differs from crds/: run \`make chart-crds\`"; exit 1; }
	$(BIN)/ruff check operator tests tools bench
	$(BIN)/ruff format --check operator tests tools bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix operator tests tools bench
	$(BIN)/ruff format operator tests tools bench

# Two workers (pytest-xdist), each with its own control plane; a file's tests stay on one
# worker (--dist loadfile: module fixtures such as the Karpenter plane are built once).
# The e2e tests mostly wait on the system under test, so two workers share two cores well;
# TEST_WORKERS=0 runs them serially.
TEST_WORKERS ?= 2
test: lint cluster-binaries
	$(BIN)/pytest -m "not slow and not image" -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

test-slow: venv cluster-binaries
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# The chaos suite (docs/reliability.md): every scenario at issue 12's size, each writing one
# line to $(CHAOS_RECORDS); bench/chaos.py turns them into bench/chaos.json and the table in
# docs/reliability.md (also when a scenario failed: its row says so).
CHAOS_RECORDS ?= bench/results/chaos-records.jsonl
chaos: venv cluster-binaries
	@mkdir -p $(dir $(CHAOS_RECORDS)) && rm -f $(CHAOS_RECORDS)
	RUNNERFLEET_CHAOS_RECORD=$(abspath $(CHAOS_RECORDS)) $(BIN)/pytest -m chaos -s $(PYTEST_ARGS); \
	  status=$$?; $(BIN)/python bench/chaos.py $(CHAOS_RECORDS) --json bench/chaos.json \
	  --doc docs/reliability.md && exit $$status

# The image (docs/image.md): root, mmdebstrap and umoci (Debian packages); IMAGE_ARGS=--lock
# re-resolves tools/image/requirements.lock. test-image runs the built image's entrypoint.
image: venv
	tools/image/build.sh $(IMAGE_ARGS)

test-image: venv cluster-binaries
	$(BIN)/pytest -m image tests/image $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-cluster: venv cluster-binaries
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

demo: venv cluster-binaries
	$(BIN)/runnerfleet demo

bench: venv cluster-binaries
	$(BIN)/python bench/run.py --jobs 200 $(BENCH_ARGS)
	$(BIN)/python bench/latency.py --jobs 100

# The fleet benchmark (docs/benchmarks.md): 100 teams x 10 scale sets by default;
# e.g. `make bench-fleet FLEET_ARGS="--teams 2 --scale-sets 5 --idle 60"` for a small run.
bench-fleet: venv cluster-binaries
	$(BIN)/python bench/fleet.py $(FLEET_ARGS)

# Release artifacts (docs/install.md, "Release artifacts"): dist/runnerfleet-<version>.tgz,
# dist/install.yaml and dist/SHA256SUMS. The image is pinned by digest in install.yaml when
# IMAGE_DIGEST=sha256:<hex> is given, else when dist/image.digest (from `make image`) exists.
IMAGE_DIGEST ?=
release: venv
	tools/build-binaries.sh helm
	$(BIN)/python tools/release/release.py --out dist $(if $(IMAGE_DIGEST),--image-digest $(IMAGE_DIGEST))

cluster-up: venv cluster-binaries
	$(BIN)/runnerfleet cluster up --nodes 3

cluster-down: venv
	$(BIN)/runnerfleet cluster down

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
