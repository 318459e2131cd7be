"""Which sandboxed programs are running on this machine, and what they use (for tests that
check cleanup and the limits over all runs)."""

from __future__ import annotations

from pathlib import Path


def sandboxed_programs(under: int | None = None) -> list[int]:
    """Pids of processes running a sandboxed program: their last argument is the program's
    path inside the sandbox (bwrap's own command line ends with the launcher's path).
    ``under``: only descendants of that pid (not the runs of other test processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args[-2:] == [b"/sandbox/main.py", b""]:
                found.append(int(entry.name))
    if under is None:
        return found
    return [pid for pid in found if _descends(pid, under)]


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False


def sandboxed_usage(under: int) -> tuple[int, int]:
    """(memory, tasks) of the sandboxed programs below ``under`` together: the sum of their
    proportional set sizes (shared pages split between the processes sharing them), and of
    their threads."""
    memory = tasks = 0
    for pid in sandboxed_programs(under):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            threads = sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
        except OSError:  # ended meanwhile
            continue
        pss = next((line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")), "0")
        memory += int(pss) * 1024
        tasks += threads
    return memory, tasks
