"""Final frames that outlive the connection they were sent on, so an outage does not run a
finished task twice.

A worker's final frame travels on core NATS. Sent while the worker is cut off, it waits in the
client's buffer (or is refused when that is full); once the server is back the worker may
reconnect, and deliver it, before the controller has subscribed its inbox again, so the frame is
lost while the task's ack goes through. The controller, hearing nothing and finding the task
gone from the queue, would queue it again: with a 15 s outage every task in flight ran twice.

So a worker host keeps the final frames of the queued tasks it served, bounded (the newest are
kept), under the reply inbox of the queued request (``Scaf-Reply-To``), which names one request
of one task (a task queued again gets a new inbox):

* a controller whose started task went silent and is gone from the queue asks
  ``<prefix>.final.<tag>.<task_id>`` (body and reply subject: that inbox) before queuing it
  again; the replica holding the frame sends it to the inbox, as if it had just arrived;
* a redelivered task whose final frame a replica holds, or a peer holds (asked the same way),
  is answered with that frame and acked, not run.

Nothing durable is added: a kept frame is lost only if its worker dies too, and then the task
runs again, as it did before. Workers that do not answer (other languages) cost one "no
responders" reply: the controller then queues the task again at once.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

MAX_FRAMES = 10_000
MAX_BYTES = 64 * 1024 * 1024


class KeptFinals:
    """The final frames of queued tasks served here, by reply inbox, oldest dropped first."""

    def __init__(self, max_frames: int = MAX_FRAMES, max_bytes: int = MAX_BYTES) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._frames: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self.answered = 0  # lookups answered (a frame the controller had lost)

    def __len__(self) -> int:
        return len(self._frames)

    def keep(self, inbox: str, task_id: str, frame: bytes) -> None:
        old = self._frames.pop(inbox, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._frames[inbox] = (task_id, frame)
        self._bytes += len(frame)
        while self._frames and (len(self._frames) > self.max_frames or self._bytes > self.max_bytes):
            _, (_, dropped) = self._frames.popitem(last=False)
            self._bytes -= len(dropped)

    def get(self, inbox: str, task_id: str | None = None) -> bytes | None:
        """The final frame sent to ``inbox`` (only if it was ``task_id``'s, when given)."""
        kept = self._frames.get(inbox)
        if kept is None or (task_id is not None and kept[0] != task_id):
            return None
        return kept[1]

    async def answer(self, msg: Msg) -> None:
        """A lookup (``<prefix>.final.<tag>.<task_id>``, body: the inbox): answer only when
        the frame is here; replicas without it stay silent."""
        task_id = msg.subject.rsplit(".", 1)[-1]
        frame = self.get(msg.data.decode(errors="replace"), task_id)
        if frame is not None and msg.reply:
            self.answered += 1
            with contextlib.suppress(Exception):  # cut off again: the asker asks again or requeues
                await msg.respond(frame)


async def ask_peers(nc: Client, subject: str, inbox: str, wait: float) -> bytes | None:
    """Ask the other replicas of a tag for the final frame sent to ``inbox``; None if none
    answers within ``wait`` seconds (the asker hears its own question and stays silent)."""
    try:
        reply = await nc.request(subject, inbox.encode(), timeout=wait)
    except (NatsTimeoutError, NoRespondersError, TimeoutError):
        return None
    except Exception:  # cut off from NATS: no peer can be asked, the task runs
        return None
    return reply.data or None
