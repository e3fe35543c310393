"""The load generator: one process publishing `rate` messages a second for `seconds` to
`plant/<prefix>-d<j>/data` (10 devices, round robin), at QoS 0 or 1, over a raw MQTT 3.1.1
socket (prebuilt packets, no client library: one Python process reaches well over 20k msg/s).

Each message carries 3 datapoints in ThingsBoard's flat form, `{"ts": ..., "seq": n,
"temperature": t, "running": true}`; `ts` = a fixed base + the device's own `seq` in ms, so that
(device, ts, key) names each datapoint once and a sink can count distinct ones and duplicates.

Prints one JSON line at the end: {"sent", "acked", "seconds", "started" (time.time())}. At QoS 1 it waits (up to 60 s)
for the broker's PUBACK of every message; a PUBLISH the socket cannot take blocks, so a broker
that slows down slows this publisher (the achieved rate is reported, not the asked one).
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

DEVICES = 10
TS_BASE = 1_700_000_000_000


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + _varint(len(body)) + body


def _publish(topic: bytes, payload: bytes, qos: int, pid: int) -> bytes:
    head = len(topic).to_bytes(2, "big") + topic
    if qos:
        head += pid.to_bytes(2, "big")
    body = head + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


class Acks(threading.Thread):
    """Counts PUBACKs (4 bytes each, 0x40 0x02 id id) on the socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.count = 0

    def run(self) -> None:
        buf = b""
        while data := self.sock.recv(65536):
            buf += data
            while len(buf) >= 2:
                length = buf[1] + 2  # PUBACK / PINGRESP: remaining length < 128
                if len(buf) < length:
                    break
                if buf[0] >> 4 == 4:
                    self.count += 1
                buf = buf[length:]


def run(port: int, prefix: str, rate: float, seconds: float, qos: int) -> dict[str, float]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(f"bench-load-{prefix}"))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise SystemExit(f"the broker on port {port} refused the CONNECT: {connack!r}")
    acks = Acks(sock)
    acks.start()
    topics = [f"plant/{prefix}-d{j}/data".encode() for j in range(DEVICES)]
    seq = [0] * DEVICES
    sent = 0
    started = time.time()
    t0 = time.perf_counter()
    while (now := time.perf_counter()) - t0 < seconds:
        due = min(int((now - t0) * rate) + 1, int(rate * seconds))
        chunk = []
        while sent < due:
            j = sent % DEVICES
            n = seq[j]
            seq[j] = n + 1
            payload = b'{"ts": %d, "seq": %d, "temperature": %d, "running": true}' % (
                TS_BASE + n,
                n,
                n % 50,
            )
            sent += 1
            chunk.append(_publish(topics[j], payload, qos, sent % 65535 + 1))
        if chunk:
            sock.sendall(b"".join(chunk))
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    deadline = time.monotonic() + 60
    while qos and acks.count < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    return {
        "sent": sent,
        "acked": acks.count if qos else sent,
        "seconds": round(elapsed, 3),
        "started": started,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True, help="device names are <prefix>-d0..d9")
    parser.add_argument("--rate", type=float, required=True, help="messages a second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    args = parser.parse_args()
    print(json.dumps(run(args.port, args.prefix, args.rate, args.seconds, args.qos)), flush=True)
