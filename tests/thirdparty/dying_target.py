"""A target that stops answering in the middle of a run (issue 13), served in its own process so
that dying means what it means on a real host: the process exits and its socket is gone.

    python tests/thirdparty/dying_target.py PORT DB crash_on_deep_body
        the reference server, whose parser of a malformed JSON body answers 500 (an HTTP-04 violation
        found before the crash), and which exits without an answer on a deeply nested body, as a
        recursive parser that overflows its stack does (ROB-02's deep_nesting_item case)
    python tests/thirdparty/dying_target.py PORT DB close_after:N
        the reference server, which answers N requests and then exits (its socket closes): no request
        is to blame
"""
from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

_DEEP = re.compile(rb"[\[{]{1000}")


def crash_on_deep_body(app):
    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if _DEEP.search(body):
            os._exit(70)  # a stack overflow: no answer, the process is gone
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await app(scope, replay, send)
    return wrapped


def close_after(app, n: int, server_box: list):
    """Answers n requests, the last with `Connection: close`, then stops listening (a refused
    connection from then on, not a dropped request) and exits a moment later."""
    count = 0

    async def wrapped(scope, receive, send):
        nonlocal count
        if scope["type"] != "http":
            return await app(scope, receive, send)
        count += 1
        last = count == n

        async def send_closing(msg):
            if last and msg["type"] == "http.response.start":
                msg = dict(msg, headers=[*msg.get("headers", []), (b"connection", b"close")])
            await send(msg)
        await app(scope, receive, send_closing if last else send)
        if last:
            for srv in server_box[0].servers:
                srv.close()  # the listening socket is gone: the next connection is refused
            threading.Timer(1.0, os._exit, (0,)).start()
    return wrapped


def main(argv: list[str]) -> None:
    port, db, mode = int(argv[0]), argv[1], argv[2]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for the mutants
    import uvicorn
    from reference_server import create_app

    app = create_app(db)
    server_box: list = []
    if mode == "crash_on_deep_body":
        from mutants.http import malformed_json_500

        app = crash_on_deep_body(malformed_json_500(app))
    elif mode.startswith("close_after:"):
        app = close_after(app, int(mode.split(":", 1)[1]), server_box)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    server_box.append(server)
    server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
