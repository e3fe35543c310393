"""The systemd notify protocol: READY=1 once serving, WATCHDOG=1 from the event loop.

With `Type=notify` and `WatchdogSec=` in the unit, systemd kills a gateway whose event loop
stops pinging (a hung master), which frees its data-directory lock so a standby takes over.
The protocol is one datagram per message on the socket named by $NOTIFY_SOCKET; without it
(not under systemd, in a container) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec, when systemd asked for pings (and they are for this process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


async def watchdog_pings() -> None:
    """Ping from the event loop itself: if the loop hangs, the pings stop and systemd acts."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def ready(status: str) -> None:
    with contextlib.suppress(OSError):
        notify(f"READY=1\nSTATUS={status}")


def stopping() -> None:
    with contextlib.suppress(OSError):
        notify("STOPPING=1")
