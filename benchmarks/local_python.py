"""A stand-in ``python`` tool for benchmarks on a developer's machine, until the tools
worker's sandboxed code-execution tool is available: it runs the model's program in a child
``python -I -S`` with no environment, an empty temporary working directory, CPU-time, memory,
file-size and process limits, and a wall-clock deadline.

Not a sandbox: the child can still read the files the user can and open sockets. That is why
it lives in ``benchmarks/`` and is used only with ``--local-python`` (the benchmark otherwise
uses the sandboxed tool of the tools worker), on problems whose programs are arithmetic.
Same interface as the sandboxed tool: arguments ``{"code": "<source>"}``, result = stdout."""

from __future__ import annotations

import asyncio
import sys
import tempfile

from scaffolding_nats.proto.tasks import ToolDefinition
from scaffolding_nats.workers.tools import Tool, ToolInputError, ToolResult

MAX_CODE_CHARS = 20_000
MAX_OUTPUT_CHARS = 4_000
CPU_SECONDS = 5
MEMORY_BYTES = 512 * 1024 * 1024
WALL_SECONDS = 10.0

_LIMITS = f"""
import resource
resource.setrlimit(resource.RLIMIT_CPU, ({CPU_SECONDS}, {CPU_SECONDS}))
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_BYTES}, {MEMORY_BYTES}))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
"""

DEFINITION = ToolDefinition(
    name="python",
    description="Run a short Python program and return what it prints.",
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python source"}},
        "required": ["code"],
    },
)


async def run_code(arguments: dict[str, object]) -> ToolResult:
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolInputError("'code' must be a non-empty string")
    if len(code) > MAX_CODE_CHARS:
        raise ToolInputError(f"program longer than {MAX_CODE_CHARS} characters")
    with tempfile.TemporaryDirectory(prefix="bench-python-") as cwd:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LIMITS + "\nexec(compile(__import__('sys').stdin.read(), '<program>', 'exec'), {'__name__': '__main__'})",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env={},
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(code.encode()), WALL_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return ToolResult.error(f"error: program ran past {WALL_SECONDS}s", exit_code=124)
    stdout = out.decode(errors="replace")[:MAX_OUTPUT_CHARS]
    stderr = err.decode(errors="replace")[-MAX_OUTPUT_CHARS:]
    if proc.returncode != 0:
        return ToolResult(result=stderr or "error", stdout=stdout, stderr=stderr, exit_code=proc.returncode or 1,
                          is_error=True)
    return ToolResult(result=stdout, stdout=stdout, stderr=stderr)


LOCAL_PYTHON = Tool(definition=DEFINITION, run=run_code)
