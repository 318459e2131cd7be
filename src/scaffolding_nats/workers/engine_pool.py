"""A pool of replicas of one OpenAI-compatible engine, as one worker sees them.

Replicas are given as several base URLs, or as one host name that resolves to all of them (a
compose service with replicas, a Kubernetes headless service), re-resolved every
``resolve_every`` seconds when a request comes. Each replica has ``slots`` request slots (its
``--parallel``). A request with an affinity key goes to the replica its key ranks first while
that replica has a free slot (``routing.choose_engine``); inside the replica it may be pinned to
the slot that holds its prefix (``routing.choose_slot``; llama-server's ``id_slot``). A replica
that refuses or drops a connection is set aside for ``down_for`` seconds: its keys move to
their next replica, and the worker retries the request there.

Routing is a worker's own view: nothing is shared between worker replicas but the hash, which
ranks replicas the same way everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai

from .. import metrics
from ..proto.tasks import Usage
from .errors import BackendError
from .routing import SlotState, choose_engine, choose_slot, longest_prefix

log = logging.getLogger(__name__)


HISTORY = 256
"""Recent texts remembered per replica, to send a prompt where its longest prefix was computed
(llama-server keeps far more in its slots and its RAM prompt cache)."""


@dataclass
class EngineStats:
    """Counters of one replica, as this worker saw them (Prometheus has the same, labelled)."""

    requests: int = 0
    home: int = 0
    spill: int = 0
    any: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prefix_hits: int = 0
    failovers: int = 0

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def hit_rate(self) -> float:
        return self.prefix_hits / self.requests if self.requests else 0.0


class Engine:
    """One replica: its URL, slots, the requests of ours in flight and what its slots hold."""

    def __init__(self, url: str, slots: int) -> None:
        self.url = url
        self.slots = slots
        self.in_flight = 0
        self.slot_state = [SlotState() for _ in range(slots)]
        self.down_until = 0.0
        self.stats = EngineStats()
        self.client: openai.AsyncOpenAI | None = None
        self.history: deque[str] = deque(maxlen=HISTORY)
        """Texts this replica computed lately (prompt and output): what its cache may hold."""

    @property
    def name(self) -> str:
        return self.url

    def forget_cache(self) -> None:
        self.history.clear()
        for s in self.slot_state:
            s.text, s.key = "", None


@dataclass
class Lease:
    """One request's place: the replica, the slot it is pinned to (or ``None``), why it went
    there, and the client to call it with."""

    engine: Engine
    slot: int | None
    route: str
    client: openai.AsyncOpenAI
    key: str | None = None
    prompt: str = ""
    cached_text: str | None = None
    """What the slot's cache holds once the request is done (prompt and output), when known."""
    done: bool = field(default=False, repr=False)

    slot_offset: int = 0

    def extra_body(self) -> dict[str, Any]:
        """llama-server's fields that pin the request to its slot and keep the prompt cached."""
        if self.slot is None:
            return {}
        return {"id_slot": self.slot_offset + self.slot, "cache_prompt": True}


class EnginePool:
    """``urls``: base URLs of the replicas (``http://host:port/v1``). ``resolve_every``: seconds
    between re-resolving their host names to every address (``None``: use them as given).
    ``affinity_wait``: how long a request waits for its key's replica to free a slot before it
    takes another one. ``pin_slots``: pass ``id_slot`` (llama-server only), slots
    ``slot_offset .. slot_offset + slots - 1``: workers that share an engine must pin disjoint
    ranges (its ``--parallel`` covering them all), or a request pinned to a slot another client
    holds waits for it. ``wait_timeout``: the longest a request waits for any free slot before
    it fails retryable."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        slots: int,
        make_client: Callable[[str], openai.AsyncOpenAI],
        resolve_every: float | None = None,
        affinity_wait: float = 0.25,
        pin_slots: bool = False,
        slot_offset: int = 0,
        down_for: float = 5.0,
        wait_timeout: float = 600.0,
    ) -> None:
        if not urls:
            raise ValueError("an engine pool needs at least one base URL")
        self.urls = list(urls)
        self.slots = slots
        self.make_client = make_client
        self.resolve_every = resolve_every
        self.affinity_wait = affinity_wait
        self.pin_slots = pin_slots
        self.slot_offset = slot_offset
        self.down_for = down_for
        self.wait_timeout = wait_timeout
        self.engines: list[Engine] = [Engine(u, slots) for u in self.urls]
        self._resolved_at: float | None = None
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick = 0

    # -- loop binding and replicas -----------------------------------------------------------

    def bind(self) -> None:
        """Clients and events belong to one event loop: a pool used from another loop gets
        fresh ones (and forgets in-flight counts of the finished loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._changed = asyncio.Event()
            for e in self.engines:
                e.client, e.in_flight = None, 0
                for s in e.slot_state:
                    s.busy = False

    def client_of(self, engine: Engine) -> openai.AsyncOpenAI:
        self.bind()
        if engine.client is None:
            engine.client = self.make_client(engine.url)
        return engine.client

    async def refresh(self, *, force: bool = False) -> None:
        """Re-resolve host names to all their addresses when due; a failed lookup keeps the
        replicas known so far."""
        if self.resolve_every is None:
            return
        now = time.monotonic()
        if not force and self._resolved_at is not None and now - self._resolved_at < self.resolve_every:
            return
        self._resolved_at = now
        urls: list[str] = []
        for url in self.urls:
            try:
                urls.extend(await asyncio.wait_for(_resolve(url), 5.0))
            except (OSError, TimeoutError) as exc:
                log.warning("engine pool: resolving %s failed (%r); keeping %d replicas", url, exc, len(self.engines))
                return
        known = {e.url: e for e in self.engines}
        fresh = [known.get(u) or Engine(u, self.slots) for u in dict.fromkeys(urls)]
        if [e.url for e in fresh] != [e.url for e in self.engines]:
            log.info("engine pool: replicas now %s", [e.url for e in fresh])
        self.engines = fresh
        self._notify()

    def usable(self, now: float) -> list[Engine]:
        """Replicas not set aside; every replica when all are (one may be back)."""
        up = [e for e in self.engines if e.down_until <= now]
        return up or list(self.engines)

    # -- leases ----------------------------------------------------------------------------

    async def acquire(self, key: str | None, prompt: str = "") -> Lease:
        """A slot on the replica for ``key`` (see ``routing.choose_engine``), waiting at most
        ``affinity_wait`` for the key's own replica and ``wait_timeout`` for any."""
        self.bind()
        await self.refresh()
        started = time.monotonic()
        reuse = {e.url: longest_prefix(e.history, prompt) for e in self.engines} if key and prompt else None
        while True:
            now = time.monotonic()
            engine, route = choose_engine(
                key, self.usable(now), waited_enough=now - started >= self.affinity_wait, reuse=reuse
            )
            if engine is not None:
                break
            if now - started >= self.wait_timeout:
                raise BackendError(
                    f"no engine slot free for {self.wait_timeout:.0f}s ({len(self.engines)} replicas)",
                    retryable=True,
                    details={"replicas": [e.url for e in self.engines], "reason": "engines_busy"},
                )
            until = started + (self.affinity_wait if route == "wait" else self.wait_timeout)
            assert self._changed is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.001, until - now))
        engine.in_flight += 1
        slot = choose_slot(engine.slot_state, key, prompt) if self.pin_slots else None
        if slot is not None:
            state = engine.slot_state[slot]
            state.busy, state.key = True, key
        engine.stats.requests += 1
        setattr(engine.stats, route, getattr(engine.stats, route) + 1)
        metrics.ENGINE_REQUESTS.labels(engine.url, route).inc()
        return Lease(engine, slot, route, self.client_of(engine), key, prompt, slot_offset=self.slot_offset)

    def release(self, lease: Lease) -> None:
        """Free the lease's slot (synchronous, so a cancelled request always frees it) and
        remember what its cache holds now (``lease.cached_text``)."""
        if lease.done:
            return
        lease.done = True
        engine = lease.engine
        engine.in_flight = max(0, engine.in_flight - 1)
        if lease.cached_text:
            engine.history.append(lease.cached_text)
        if lease.slot is not None and lease.slot < len(engine.slot_state):
            state = engine.slot_state[lease.slot]
            state.busy = False
            self._tick += 1
            state.last_used = self._tick
            if lease.cached_text is not None:
                state.text = lease.cached_text
        self._notify()

    def record(self, lease: Lease, usage: Usage) -> None:
        """Count what the replica computed and reused for one finished request."""
        stats = lease.engine.stats
        stats.prompt_tokens += usage.prompt_tokens
        stats.cached_tokens += usage.cached_tokens
        if usage.cached_tokens > 0:
            stats.prefix_hits += 1
            metrics.ENGINE_PREFIX_HITS.labels(lease.engine.url).inc()
        metrics.ENGINE_PROMPT_TOKENS.labels(lease.engine.url, "computed").inc(
            max(0, usage.prompt_tokens - usage.cached_tokens)
        )
        metrics.ENGINE_PROMPT_TOKENS.labels(lease.engine.url, "cached").inc(usage.cached_tokens)

    def mark_down(self, engine: Engine, exc: BaseException) -> None:
        """The replica refused or dropped a connection: set it aside, forget its cache."""
        engine.down_until = time.monotonic() + self.down_for
        engine.stats.failovers += 1
        engine.forget_cache()
        metrics.ENGINE_FAILOVERS.labels(engine.url).inc()
        log.warning("engine %s unreachable (%s): set aside for %.0fs", engine.url, type(exc).__name__, self.down_for)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    @property
    def in_flight(self) -> int:
        return sum(e.in_flight for e in self.engines)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per replica: its counters, computed tokens and prefix-hit rate."""
        return {
            e.url: {**asdict(e.stats), "computed_tokens": e.stats.computed_tokens, "hit_rate": e.stats.hit_rate}
            for e in self.engines
        }


async def _resolve(url: str) -> list[str]:
    """``url`` once per address its host resolves to (IP literals as they are)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for family, *_rest, sockaddr in infos:
        ip = str(sockaddr[0])
        netloc = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        if parts.username:
            netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
        out.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    return sorted(dict.fromkeys(out))
