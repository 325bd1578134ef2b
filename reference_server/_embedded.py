"""The child side of ``start_in_subprocess``: serve on a listening socket inherited from the parent.

``python -m reference_server._embedded --fd N [--db PATH]``. The parent bound and listened on the
socket, so it knows the port before this process has imported anything, and clients may connect at
once (the kernel queues them until uvicorn accepts). The process ends when its standard input
reaches end of file: the parent closes it on stop, and the kernel closes it if the parent dies, so
an embedded server never outlives the run that started it.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading

import uvicorn

from .app import create_app
from .server import UVICORN_OPTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_server._embedded")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening TCP socket")
    parser.add_argument("--db", default=None, help="SQLite file (default: a fresh temporary file)")
    args = parser.parse_args(argv)
    # fileno= without a family lets the socket module read family, type and protocol from the
    # descriptor: asyncio sets TCP_NODELAY only where the protocol says TCP (see start_in_thread).
    sock = socket.socket(fileno=args.fd)
    try:
        app = create_app(args.db)
    except RuntimeError as exc:
        print(f"batchspec: the embedded reference server cannot start: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **UVICORN_OPTIONS))

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at end of file: the parent stopped us, or died
        server.should_exit = True

    threading.Thread(target=watch_parent, name="batchspec-parent-watch", daemon=True).start()
    asyncio.run(server.serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
