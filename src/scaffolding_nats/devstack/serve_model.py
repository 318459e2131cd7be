"""Serve the packaged model until Ctrl-C (a separate module so ``-m`` never imports it twice).

``python -m scaffolding_nats.devstack.serve_model [smollm2|qwen-0.5b|qwen-1.5b|FILE.gguf] [--port P]``
"""

from __future__ import annotations

import argparse
import time

from .model_files import SMOLLM2
from .model_server import DEFAULT_SLOTS, ModelServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default=SMOLLM2, help="smollm2, qwen-0.5b, qwen-1.5b or a GGUF path")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--n_ctx", type=int, default=4096)
    parser.add_argument("--n_threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=DEFAULT_SLOTS, help="batched slots of n_ctx tokens each")
    parser.add_argument("--alias", default=None, help="the model name clients send")
    ns = parser.parse_args(argv)
    server = ModelServer(
        ns.model, port=ns.port, n_ctx=ns.n_ctx, n_threads=ns.n_threads, alias=ns.alias, parallel=ns.parallel
    )
    with server:
        print(f"serving {server.model} at {server.base_url}", flush=True)
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
