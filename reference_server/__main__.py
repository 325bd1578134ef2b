"""``python -m reference_server [--host H] [--port P] [--db PATH] [--workers N]``."""
from __future__ import annotations

import argparse

from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reference_server",
                                     description="Run the batchspec reference server until interrupted.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", default=None, help="SQLite file (default: a fresh temporary file) or a postgresql:// URL")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        serve(host=args.host, port=args.port, db_path=args.db, workers=args.workers)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
