"""The serving side of the P1 benchmark, as its own process (as in a deployment): a raw
nats-py echo responder and a WorkerHost over a no-op SyntheticWorker, on one connection each."""

from __future__ import annotations

import argparse
import asyncio
import signal

import nats

from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .raw_queue import serve_raw_queue


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    raw_nc = await nats.connect(args.url)
    host_nc = await nats.connect(args.url)

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await raw_nc.subscribe(f"{args.prefix}.raw", queue="raw", cb=echo)
    raw_queue = await serve_raw_queue(raw_nc, args.prefix)
    async with WorkerHost(
        host_nc, SyntheticWorker(), tags=["generation"], subjects=Subjects(args.prefix), max_concurrency=1024
    ):
        print("ready", flush=True)
        await asyncio.wait_for(stop.wait(), 3600)
    raw_queue.cancel()
    await raw_nc.close()
    await host_nc.close()


if __name__ == "__main__":
    asyncio.run(main())
