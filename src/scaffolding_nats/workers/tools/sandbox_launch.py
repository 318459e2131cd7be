"""Runs first inside the sandbox (stdlib only, no package imports): applies the resource limits
and, when bwrap ran as root, drops to an unprivileged uid; then becomes the user's program.

Limits are set here rather than on the worker, so they bind only the sandboxed processes.
The uid drop is what makes ``RLIMIT_NPROC`` bite: the kernel never counts processes of uid 0.

Usage: ``python -I -S -B launch.py [settings.json]`` (default ``/sandbox/settings.json``).
"""

import json
import os
import resource
import sys


def main() -> None:
    with open(sys.argv[1] if len(sys.argv) > 1 else "/sandbox/settings.json") as f:
        settings = json.load(f)
    cpu = int(settings["cpu_seconds"])
    memory = int(settings["memory_bytes"])
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.RLIMIT_AS: (memory, memory),
        resource.RLIMIT_NPROC: (int(settings["max_processes"]),) * 2,
        resource.RLIMIT_FSIZE: (int(settings["max_file_bytes"]),) * 2,
        resource.RLIMIT_NOFILE: (int(settings["max_open_files"]),) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)
    uid = settings.get("uid")
    if os.getuid() == 0:
        if uid is None:
            sys.exit("sandbox: refusing to run the program as root")
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))  # from root this also clears every capability
    os.closerange(3, 65536)  # nothing bwrap left open reaches the program
    os.execv(settings["python"], [settings["python"], "-I", "-B", settings["program"]])


if __name__ == "__main__":
    main()
