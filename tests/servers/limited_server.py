"""datonis_edge.serving with given limits, in its own process, serving an echo app.

    python limited_server.py --port N [--limits '{"header_timeout_ms": 1000}'] [--nofile 128]
                             [--loop uvloop|asyncio]

The app reads the whole body and answers 200 with it. SIGUSR1 opens descriptors until the
process has none left; SIGUSR2 closes them again (for the EMFILE tests). Prints "listening"
once it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
from typing import Any

from datonis_edge.config.models import ConnectionLimits
from datonis_edge.serving import bind_socket, serve_app

hogged: list[int] = []


def hog() -> None:
    try:
        while True:
            hogged.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(f"hogged {len(hogged)}", flush=True)


def free() -> None:
    while hogged:
        os.close(hogged.pop())
    print("freed", flush=True)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def main(args: argparse.Namespace) -> None:
    sock = bind_socket("127.0.0.1", args.port, "limited server")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, hog)
    loop.add_signal_handler(signal.SIGUSR2, free)
    limits = ConnectionLimits(**json.loads(args.limits))
    print("listening", flush=True)
    await serve_app(echo, sock, limits, "limited server")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--limits", default="{}")
    ap.add_argument("--nofile", type=int)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = ap.parse_args()
    if args.nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))
