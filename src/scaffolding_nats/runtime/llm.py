"""ScaffoldingLlm: binds a prototype controller to workers by tag and serves requests.

Async use: ``async with ScaffoldingLlm(...) as llm: r = await llm.generate_async(p)``.
Sync use: ``with ScaffoldingLlm(...) as llm: r = llm.generate(p)`` runs an event loop on a
private thread. Requests over ``max_parallel_requests`` wait in FIFO order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from .._compat import TaskGroup
from ..errors import ScaffoldingError
from ..proto.messages import Budget
from ..proto.tasks import new_id
from .controller import Controller, Output
from .request import Outcome, run_request
from .runner import TaskRunner
from .worker import Worker


class ScaffoldingResult:
    """One request's result: awaitable, async-iterable over streamed outputs, or ``result()``."""

    def __init__(self, *, metadata: dict[str, Any] | None = None) -> None:
        self.id = new_id()
        self.metadata = dict(metadata or {})
        self.outputs: list[Output] = [Output(text="")]
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._updates: asyncio.Queue[None] | None = None
        self._task: asyncio.Future[Any] | concurrent.futures.Future[Any] | None = None

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def _on_event(self, event_type: str, payload: dict[str, Any]) -> None:
        if event_type == "partial":
            self.outputs[0].text += payload.get("text", "")
            if self._updates is not None:
                self._updates.put_nowait(None)

    def _finish(self, outcome: Outcome | None, error: BaseException | None) -> None:
        self.outcome, self.error = outcome, error
        if outcome is not None:
            self.outputs[0] = outcome.output
        self._done.set()
        if self._updates is not None:
            self._updates.put_nowait(None)

    def result(self, timeout: float | None = None) -> ScaffoldingResult:
        """Block until done (from a thread that is not the runtime's loop)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} not finished after {timeout}s")
        if self.error is not None:
            raise self.error
        return self

    def __await__(self) -> Generator[Any, None, ScaffoldingResult]:
        if self._task is not None and not self._done.is_set():
            fut = self._task
            if isinstance(fut, concurrent.futures.Future):
                fut = asyncio.wrap_future(fut)
            yield from asyncio.shield(fut).__await__()
        if self.error is not None:
            raise self.error
        return self

    async def __aiter__(self) -> AsyncIterator[Output]:
        """Yield the output after each streamed update, then the final output."""
        if self._updates is None:
            raise RuntimeError("streaming requires generate_async on the runtime's own loop")
        seen = ""
        while not self._done.is_set():
            await self._updates.get()
            if self.outputs[0].text != seen and not self._done.is_set():
                seen = self.outputs[0].text
                yield self.outputs[0]
        if self.error is not None:
            raise self.error
        yield self.outputs[0]


class ScaffoldingLlm:
    def __init__(
        self,
        prototype_controller: Controller,
        workers: Mapping[str, Worker],
        *,
        max_parallel_requests: int = 64,
    ) -> None:
        if max_parallel_requests < 1:
            raise ValueError("max_parallel_requests must be at least 1")
        self.prototype_controller = prototype_controller
        self.runner = TaskRunner(workers)
        self.max_parallel_requests = max_parallel_requests
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ScaffoldingLlm:
        self._loop = asyncio.get_running_loop()
        self._sem = asyncio.Semaphore(self.max_parallel_requests)
        async with AsyncExitStack() as stack:
            await self.runner.start()
            stack.push_async_callback(self.runner.stop)
            self._tg = await stack.enter_async_context(TaskGroup())
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for requests in flight, then stop the workers."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._closed = True

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise RuntimeError("ScaffoldingLlm is shut down")
        if self._thread is None:
            ready = threading.Event()
            errors: list[BaseException] = []

            async def serve() -> None:
                self._stopping = asyncio.Event()
                try:
                    async with self:
                        ready.set()
                        await self._stopping.wait()
                except BaseException as exc:  # surfaced to the caller below
                    errors.append(exc)
                    ready.set()

            self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
            self._thread.start()
            ready.wait()
            if errors:
                raise errors[0]
        assert self._loop is not None
        return self._loop

    def shutdown(self) -> None:
        """Stop the private loop thread (sync use) after in-flight requests finish."""
        if self._thread is not None and self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
            self._thread = None
        self._closed = True

    def __enter__(self) -> ScaffoldingLlm:
        self._ensure_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- requests --------------------------------------------------------------------------

    def generate_async(
        self,
        prompt: Any,
        *,
        budget: Budget | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ScaffoldingResult:
        """Start a request and return its result handle at once."""
        result = ScaffoldingResult(metadata=metadata)
        coro = self._run(result, prompt, budget, kwargs)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop and self._tg is not None:
            result._updates = asyncio.Queue()
            result._task = self._tg.create_task(coro)
        else:
            loop = self._ensure_thread()
            result._task = asyncio.run_coroutine_threadsafe(self._submit(coro), loop)
        return result

    async def _submit(self, coro: Any) -> None:
        assert self._tg is not None
        await self._tg.create_task(coro)

    async def _run(self, result: ScaffoldingResult, prompt: Any, budget: Budget | None, kwargs: dict[str, Any]) -> None:
        assert self._sem is not None
        try:
            async with self._sem:
                controller = self.prototype_controller.clone()
                outcome = await run_request(
                    controller,
                    self.runner,
                    prompt=prompt,
                    kwargs=kwargs,
                    budget=budget,
                    on_event=result._on_event,
                )
        except ScaffoldingError as exc:
            result._finish(None, exc)
            return
        except Exception as exc:
            result._finish(None, exc)
            return
        except BaseException as exc:
            result._finish(None, exc)
            raise
        result._finish(outcome, None)

    def generate(
        self, prompts: str | Sequence[str], *, timeout: float | None = None, **kwargs: Any
    ) -> ScaffoldingResult | list[ScaffoldingResult]:
        """Blocking: one prompt gives one result, a list gives a list (run concurrently)."""
        single = isinstance(prompts, str)
        batch = [prompts] if single else list(prompts)
        results = [self.generate_async(p, **kwargs) for p in batch]
        for r in results:
            r.result(timeout)
        return results[0] if single else results
