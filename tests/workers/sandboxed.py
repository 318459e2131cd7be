"""Which sandboxed programs are running on this machine (for tests that check cleanup)."""

from __future__ import annotations

from pathlib import Path


def sandboxed_programs() -> list[int]:
    """Pids of processes running a sandboxed program: their last argument is the program's
    path inside the sandbox (bwrap's own command line ends with the launcher's settings)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args[-2:] == [b"/sandbox/main.py", b""]:
                found.append(int(entry.name))
    return found
