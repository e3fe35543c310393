"""A fast stand-in for many Logix PLCs, for the benchmark only: one asyncio process answering
on several ports what cpppo answers for DINT tags (RegisterSession, Forward Open / Large
Forward Open, connected Read Tag and Multiple Service Packets), without cpppo's cost (about
1 ms of CPU a tag), so that the gateway, not the server, is what is measured. Every tag is
a DINT whose value is the sum of its name's bytes; anything else is answered "no such tag".

    python tests/servers/enip_fast.py --ports 5001,5002,...
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct

ENCAP = struct.Struct("<HHII8sI")  # command, length, session, status, context, options


def read_reply(service: bytes) -> bytes:
    if not service or service[0] != 0x4C:
        return bytes([service[0] | 0x80 if service else 0x80, 0, 0x08, 0])  # not supported
    path = service[2 : 2 + 2 * service[1]]
    value = sum(path[2 : 2 + path[1]]) if path[:1] == b"\x91" else 0
    return b"\xcc\x00\x00\x00\xc4\x00" + struct.pack("<i", value)


def cip_reply(request: bytes) -> bytes:
    if request[0] != 0x0A:
        return read_reply(request)
    count = struct.unpack_from("<H", request, 6)[0]
    offsets = [*struct.unpack_from(f"<{count}H", request, 8), len(request) - 6]
    body = request[6:]
    replies = [read_reply(body[offsets[i] : offsets[i + 1]]) for i in range(count)]
    at, table = 2 + 2 * count, []
    for r in replies:
        table.append(at)
        at += len(r)
    head = struct.pack(f"<BBBB{count + 1}H", 0x8A, 0, 0, 0, count, *table)
    return head + b"".join(replies)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    session = 0x1234
    try:
        while True:
            head = await reader.readexactly(24)
            command, length, _, _, context, options = ENCAP.unpack(head)
            data = await reader.readexactly(length)
            if command == 0x65:  # RegisterSession
                out = data
            elif command == 0x6F:  # SendRRData: Forward Open (0x54 or 0x5B) or Forward Close
                service = data[16]
                reply = bytes([service | 0x80, 0, 0, 0]) + struct.pack("<II", 0x20000002, 0x1)
                reply += b"\0" * 18
                out = data[:6] + struct.pack("<HHHHH", 2, 0, 0, 0xB2, len(reply)) + reply
            elif command == 0x70:  # SendUnitData: connected CIP
                conn, seq = struct.unpack_from("<I", data, 12)[0], data[20:22]
                reply = seq + cip_reply(data[22:])
                out = data[:6] + struct.pack("<HHHIHH", 2, 0xA1, 4, conn, 0xB1, len(reply)) + reply
            else:  # UnregisterSession and the rest: the session ends
                break
            writer.write(ENCAP.pack(command, len(out), session, 0, context, options) + out)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True)
    args = ap.parse_args()
    servers = [
        await asyncio.start_server(serve, "127.0.0.1", int(p)) for p in args.ports.split(",")
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
