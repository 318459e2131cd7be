"""Only what an autoscaler reads of nats-server's monitoring, on an address others reach.

nats-server's monitoring port has no login, and ``/connz``, ``/subsz`` and ``/accountz`` list
every connection's user, address and subscriptions; so the server listens on loopback only
(``k8s/nats/server.conf``). KEDA's ``nats-jetstream`` scaler needs ``/jsz`` (stream and consumer
counts) and, on a cluster, ``/varz`` of each node, from another pod: this sidecar serves those
and ``/healthz`` (GET only) from loopback to the pod's own address and port, and refuses the
rest with 403.

  python -m scaffolding_nats.security.monitor_proxy --listen $(POD_IP):8222 --upstream 127.0.0.1:8222
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

ALLOWED = frozenset({"/healthz", "/varz", "/jsz"})
MAX_HEAD = 8192
TIMEOUT_S = 10.0  # a whole exchange, upstream included
MAX_BODY = 64 << 20  # /jsz with every consumer's detail stays far below this


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _reply(status: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


async def _forward(target: str, upstream: tuple[str, int], writer: asyncio.StreamWriter) -> None:
    """The upstream's response, bytes as they come (HTTP/1.0: no chunking, ends at close)."""
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError as exc:
        writer.write(_reply("502 Bad Gateway", f"nats-server monitoring unreachable: {exc}\n"))
        return
    try:
        up_writer.write(f"GET {target} HTTP/1.0\r\nHost: {upstream[0]}:{upstream[1]}\r\n\r\n".encode())
        await up_writer.drain()
        sent = 0
        while sent <= MAX_BODY and (chunk := await up_reader.read(1 << 16)):
            sent += len(chunk)
            writer.write(chunk)
            await writer.drain()
    finally:
        up_writer.close()
        with contextlib.suppress(OSError):
            await up_writer.wait_closed()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int]) -> None:
    try:
        async with asyncio.timeout(TIMEOUT_S):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                writer.write(_reply("400 Bad Request", "not an HTTP request\n"))
                return
            if method != "GET" or target.split("?", 1)[0] not in ALLOWED:
                writer.write(_reply("403 Forbidden", f"only GET {', '.join(sorted(ALLOWED))} are served here\n"))
                return
            await _forward(target, upstream, writer)
    except (TimeoutError, OSError):
        pass  # the client or nats-server went quiet or away: nothing more to say to it
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def start(listen: tuple[str, int], upstream: tuple[str, int]) -> asyncio.Server:
    return await asyncio.start_server(lambda r, w: _handle(r, w, upstream), *listen, limit=MAX_HEAD)


async def _serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    server = await start(listen, upstream)
    print(f"ready: {listen[0]}:{listen[1]} -> {upstream[0]}:{upstream[1]} ({', '.join(sorted(ALLOWED))})", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=_address, required=True, help="HOST:PORT to serve on (the pod's IP)")
    p.add_argument("--upstream", type=_address, default=("127.0.0.1", 8222), help="nats-server's monitoring")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
