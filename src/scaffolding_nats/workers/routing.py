"""Pure routing decisions of an engine pool (no I/O, so they are tested on their own).

* ``rank``: rendezvous (highest-random-weight) hashing. Every worker replica ranks the engines
  the same way for a key, with no shared state, and when an engine goes or comes only the keys
  it ranked first move.
* ``choose_engine``: bounded-load consistent hashing. A key goes to the first engine of its
  ranking that has a free slot; only after a short wait for that engine does it take the next
  one with room, so a hot key spills over instead of piling up, and nothing waits for a full
  engine while another one is idle longer than the wait. Given what each engine holds
  (``reuse``: the longest prefix of the prompt it has seen), the engine holding the longest
  prefix comes first, so a continuation follows its parent even after its key spilled.
* ``choose_slot``: inside one engine, the free slot whose cached text shares the longest prefix
  with the prompt (else one this key used, else the least recently used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

MIN_SHARED_CHARS = 32
"""A slot whose cached text shares fewer leading characters with a prompt counts as unrelated."""


class Loaded(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def slots(self) -> int: ...


E = TypeVar("E", bound=Loaded)


def _weight(key: str, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest(), "big")


def rank(key: str, engines: Sequence[E]) -> list[E]:
    """The engines in ``key``'s rendezvous order (its home first)."""
    return sorted(engines, key=lambda e: _weight(key, e.name), reverse=True)


def has_room(engine: Loaded) -> bool:
    return engine.in_flight < engine.slots


def choose_engine(
    key: str | None,
    engines: Sequence[E],
    *,
    waited_enough: bool,
    reuse: Mapping[str, int] | None = None,
) -> tuple[E | None, str]:
    """The engine to send a request to now, and why (``home``, ``spill``, ``any``); ``None``
    when the request should wait (its home is full and it has not waited enough, or every
    engine is full). ``reuse``: characters of the prompt each engine (by name) holds."""
    if not engines:
        return None, "none"
    if key is None:
        free = [e for e in engines if has_room(e)]
        if not free:
            return None, "full"
        return min(free, key=lambda e: (e.in_flight / e.slots, e.name)), "any"
    order = rank(key, engines)
    if reuse:
        order.sort(key=lambda e: -reuse.get(e.name, 0))  # stable: the key's ranking breaks ties
    if has_room(order[0]):
        return order[0], "home"
    if not waited_enough:
        return None, "wait"
    for engine in order[1:]:
        if has_room(engine):
            return engine, "spill"
    return None, "full"


@dataclass
class SlotState:
    """What a client knows of one engine slot: whether it runs a request of ours, the text its
    KV cache holds after our last request there, and the key that sent it."""

    busy: bool = False
    text: str = ""
    key: str | None = None
    last_used: int = 0


def shared_prefix(a: str, b: str) -> int:
    """Length of the common prefix of two strings (binary search on slice equality: C speed)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def longest_prefix(texts: Iterable[str], prompt: str) -> int:
    """The longest prefix of ``prompt`` among ``texts`` (0 below ``MIN_SHARED_CHARS``)."""
    head = prompt[:MIN_SHARED_CHARS]
    best = 0
    for text in texts:
        if text.startswith(head):  # the cheap test first: most texts are another job's
            best = max(best, shared_prefix(text, prompt))
    return best if best >= MIN_SHARED_CHARS else 0


def choose_slot(slots: Sequence[SlotState], key: str | None, prompt: str) -> int | None:
    """The free slot to pin a request to: the longest cached prefix of ``prompt`` (at least
    ``MIN_SHARED_CHARS``), else a slot the same key used last, else the least recently used;
    ``None`` when every slot is busy."""
    free = [i for i, s in enumerate(slots) if not s.busy]
    if not free:
        return None
    best, best_len = None, MIN_SHARED_CHARS - 1
    for i in free:
        n = shared_prefix(slots[i].text, prompt)
        if n > best_len:
            best, best_len = i, n
    if best is not None:
        return best
    if key is not None:
        mine = [i for i in free if slots[i].key == key]
        if mine:
            return max(mine, key=lambda i: slots[i].last_used)
    return min(free, key=lambda i: slots[i].last_used)
