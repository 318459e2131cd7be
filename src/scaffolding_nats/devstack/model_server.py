"""Run a real small model on the CPU behind llama.cpp's OpenAI-compatible ``llama-server``.

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
from typing import IO, Any

from ._lifecycle import Managed
from .model_files import SMOLLM2, resolve_model, sampling_defaults
from .nats_server import free_port

DEFAULT_SLOTS = 8
"""Parallel slots of the engine: a vote of 8 samples runs as one batch."""


def llama_server_binary() -> str:
    """``$SCAF_LLAMA_SERVER``, else the one ``make install`` put beside this Python
    (``services/model-server/build-llama-server.sh``), else ``llama-server`` on the PATH."""
    if path := os.environ.get("SCAF_LLAMA_SERVER"):
        return path
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    if path := shutil.which("llama-server"):
        return path
    raise RuntimeError(
        "llama-server not found: `make install` builds it (services/model-server/build-llama-server.sh "
        ".venv/bin/llama-server), or set SCAF_LLAMA_SERVER"
    )


def llama_server_args(
    model_path: str,
    alias: str,
    *,
    host: str,
    port: int,
    n_ctx: int = 4096,
    parallel: int = DEFAULT_SLOTS,
    n_threads: int | None = None,
) -> list[str]:
    """The engine's command line, shared by the local stack, the tests and the model-server
    image (compose, k8s): ``parallel`` slots of ``n_ctx`` tokens each, continuous batching,
    the prompt cache, and ``/health`` for probes (probes never touch a running generation)."""
    return [
        "--model", model_path,
        "--alias", alias,
        "--host", host,
        "--port", str(port),
        "--ctx-size", str(n_ctx * parallel),  # split evenly across the slots
        "--parallel", str(parallel),
        "--cont-batching",
        *(["--threads", str(n_threads)] if n_threads else []),
        "--no-webui",
    ]  # fmt: skip


class ModelServer(Managed):
    """llama.cpp's ``llama-server`` as a child process: ``parallel`` batched slots of ``n_ctx``
    tokens each, log-probs computed in C++. Use as a (sync or async) context manager.

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
        parallel: int = DEFAULT_SLOTS,
    ) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
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

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """The served model's own sampling settings (``model_files.SAMPLING``), which workers
        fill into every generation that leaves them unset."""
        return sampling_defaults(self.model_spec) or sampling_defaults(self.alias)

    def command(self) -> list[str]:
        if self.model_path is None:
            self.model_path, default_alias = resolve_model(self.model_spec)
            self.alias = self.alias or default_alias
        return [
            llama_server_binary(),
            *llama_server_args(
                str(self.model_path),
                self.model,
                host="127.0.0.1",
                port=self.port,
                n_ctx=self.n_ctx,
                parallel=self.parallel,
                n_threads=self.n_threads,
            ),
            *self.extra_args,
        ]

    def start(self) -> ModelServer:
        """Blocking: spawn and wait (bounded) until ``GET /health`` says the model is loaded."""
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

    @property
    def health_url(self) -> str:
        """What probes ask: 503 while the model loads, 200 once it serves; it never queues
        behind, nor interrupts, a running generation."""
        return f"http://127.0.0.1:{self.port}/health"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=1.0) as resp:
                body = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return isinstance(body, dict) and body.get("status") == "ok"

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
