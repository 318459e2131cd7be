"""Hypothesis strategies for hostile bus messages: raw bytes, arbitrary MessagePack (binary,
extension types, huge integers, deep nesting) and valid messages with fields mutated."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

TOKEN = st.from_regex(r"[A-Za-z0-9_\-]{1,16}", fullmatch=True)
NOT_TOKEN = st.sampled_from(["", "*", ">", "a.b", "a b", "x" * 200, "é", "a\x00"])

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
_KEYS = st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1)
VALUES = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=16,
)


def deep(n: int) -> Any:
    node: Any = 1
    for _ in range(n):
        node = {"a": node}
    return node


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some fields replaced by hostile values, dropped, or joined by extra keys."""
    keys = sorted(base)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = dict(base)
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            choice = draw(st.integers(0, 2))
            if choice == 0:
                out.pop(key, None)
            elif choice == 1:
                out[key] = draw(VALUES)
            else:
                out[key] = deep(draw(st.sampled_from([70, 300, 500])))
        if draw(st.booleans()):
            out[draw(st.text(max_size=6))] = draw(VALUES)
        return out

    return build()


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, datetime=False, strict_types=False)


def payloads(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        VALUES.map(pack),
        mutated(base).map(pack),
    )
