"""The jobs one controller holds, by job key, from intake to ack.

A held delivery answers the owner question (``<prefix>.controllers.owner.<job key>``: silence
means the job needs a new owner) and is kept alive, so JetStream redelivers a job only once
its controller is gone. A job running here can be cancelled by its key; a cancel that comes
before it runs stops it as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from nats.aio.msg import Msg

from ..errors import ScaffoldingError
from ..proto.errors import ErrorCode
from .intake import stream_seq

log = logging.getLogger(__name__)


class HeldJobs:
    def __init__(self) -> None:
        self.msgs: dict[str, Msg] = {}  # job key -> its latest delivery
        self.tasks: dict[str, asyncio.Task[object]] = {}  # job key -> the task running it
        self.cancelled: set[str] = set()  # job keys a client cancelled while held

    async def take(self, key: str, msg: Msg) -> bool:
        """Hold ``msg``; False if its job is held already (a redelivery after an outage then
        replaces the delivery kept alive; a copy published again joins the running job)."""
        held = self.msgs.get(key)
        if held is None:
            self.msgs[key] = msg
            return True
        if stream_seq(held) == stream_seq(msg):  # redelivered (an outage) while still running here
            self.msgs[key] = msg
        else:  # the same job published again (past the de-dup window): it is the one running
            log.info("job %s is running here already; its second copy joins it", key)
            await msg.term()
        return False

    def release(self, key: str) -> None:
        self.msgs.pop(key, None)
        self.cancelled.discard(key)

    def latest(self, key: str, msg: Msg) -> Msg:
        """The delivery to ack: the newest one held for the job (``msg`` if none is)."""
        return self.msgs.get(key, msg)

    def cancel(self, key: str) -> bool:
        """A client's cancel: True if the job is held here (running: it is cancelled now;
        not running yet: it stops as it starts), False if it is not."""
        task = self.tasks.get(key)
        if task is not None:
            if key not in self.cancelled:
                self.cancelled.add(key)
                task.cancel()
            return True
        if key in self.msgs:
            self.cancelled.add(key)
            return True
        return False

    @contextlib.contextmanager
    def running(self, key: str) -> Iterator[None]:
        """Run the job ``key`` in the current task: a client's cancel (before or during the
        run) raises a ``cancelled`` ScaffoldingError; any other cancellation passes."""
        run = asyncio.current_task()
        assert run is not None
        self.tasks[key] = run
        try:
            if key in self.cancelled:  # cancelled between intake and now
                raise ScaffoldingError("job cancelled by the client", code=ErrorCode.CANCELLED)
            yield
        except asyncio.CancelledError:
            if key not in self.cancelled:
                raise
            run.uncancel()
            raise ScaffoldingError("job cancelled by the client", code=ErrorCode.CANCELLED) from None
        finally:
            self.tasks.pop(key, None)
            self.cancelled.discard(key)

    async def answer(self, key: str, msg: Msg) -> None:
        """The owner question for ``key``: answered only if the job is held here."""
        if key in self.msgs and msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(b"")

    async def keep_alive(self, interval: float) -> None:
        """Every ``interval`` s, tell JetStream each held job is alive, so a long job is not
        redelivered while a dead controller's jobs are, one ack wait after it stopped."""
        while True:
            await asyncio.sleep(interval)
            for msg in list(self.msgs.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:
                    log.warning("in_progress failed: %s", exc)
