"""A seccomp filter (classic BPF, as bwrap's ``--seccomp FD`` takes it) that stops a sandboxed
program from creating user namespaces.

bwrap's own ``--disable-userns`` needs a user namespace of bwrap's, which the root mode does not
make; this filter works in both modes. It refuses ``unshare`` and ``clone`` with
``CLONE_NEWUSER`` (EPERM), ``clone3`` (ENOSYS: its flags sit in memory a filter cannot read; libc
then falls back to ``clone`` for threads), ``setns`` (EPERM), and every syscall of another ABI
(i386 on x86_64, x32, arm32 on aarch64), whose numbers the checks above would not match.
Unknown architectures get no filter; the start-up probe then tells whether a program can make a
user namespace (``Sandbox.check``).
"""

from __future__ import annotations

import errno
import os
import struct

CLONE_NEWUSER = 0x10000000

# classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (low half first: little-endian)
_NR, _ARCH, _ARG0 = 0, 4, 16
_X32_BIT = 0x40000000


class _Arch:
    def __init__(self, audit: int, unshare: int, clone: int, clone3: int, setns: int, *, x32: bool) -> None:
        self.audit, self.unshare, self.clone, self.clone3, self.setns, self.x32 = (
            audit, unshare, clone, clone3, setns, x32,
        )  # fmt: skip


_ARCHES = {
    "x86_64": _Arch(0xC000003E, unshare=272, clone=56, clone3=435, setns=308, x32=True),
    "aarch64": _Arch(0xC00000B7, unshare=97, clone=220, clone3=435, setns=268, x32=False),
}


def _stmt(code: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def no_userns_filter(machine: str | None = None) -> bytes | None:
    """The compiled filter for this machine's architecture, or None where none is known."""
    arch = _ARCHES.get(machine or os.uname().machine)
    if arch is None:
        return None
    deny = _RET_ERRNO | errno.EPERM
    nosys = _RET_ERRNO | errno.ENOSYS
    # Labels are instruction counts to jump over; the program is laid out as:
    #  0 ld arch; 1 jeq native ? 3 : 2; 2 ret deny
    #  3 ld nr; [x32: jge X32_BIT ? deny_all : next]
    #  jeq unshare ? flags; jeq clone ? flags; jeq clone3 ? nosys; jeq setns ? deny; ret allow
    #  flags: ld arg0; jset CLONE_NEWUSER ? deny : allow
    body: list[bytes] = []
    checks = [(arch.unshare, "flags"), (arch.clone, "flags"), (arch.clone3, "nosys"), (arch.setns, "deny")]
    # tail after the checks: [ret allow][ret nosys][ret deny][ld arg0][jset][ret allow][ret deny]
    tail = ["allow", "nosys", "deny", "flags", "jset", "allow2", "deny2"]
    prefix_len = 4 + (1 if arch.x32 else 0)
    checks_at = prefix_len
    tail_at = checks_at + len(checks)

    def offset(label: str, at: int) -> int:
        return tail_at + tail.index(label) - (at + 1)

    body.append(_stmt(_LD_W_ABS, _ARCH))
    body.append(_jump(_JEQ_K, arch.audit, 1, 0))
    body.append(_stmt(_RET_K, deny))
    body.append(_stmt(_LD_W_ABS, _NR))
    if arch.x32:
        body.append(_jump(_JGE_K, _X32_BIT, offset("deny", len(body)), 0))
    for nr, label in checks:
        body.append(_jump(_JEQ_K, nr, offset(label, len(body)), 0))
    body.append(_stmt(_RET_K, _RET_ALLOW))
    body.append(_stmt(_RET_K, nosys))
    body.append(_stmt(_RET_K, deny))
    body.append(_stmt(_LD_W_ABS, _ARG0))
    body.append(_jump(_JSET_K, CLONE_NEWUSER, 1, 0))
    body.append(_stmt(_RET_K, _RET_ALLOW))
    body.append(_stmt(_RET_K, deny))
    return b"".join(body)
