"""The mqtt_listener's side of the wire: paho made cheap per message.

paho reads one packet per turn of its loop: a select() and three or four recv() calls for
each message, and every PUBACK queued from another thread is one more wake-up write. At tens
of thousands of messages a second that was most of the listener's CPU. `ListenerClient` reads
the socket 64 KiB at a time (`ReadAhead`; paho skips its select() while `pending()` says
bytes are buffered, as it does for TLS) and acknowledges a whole batch with one write.

Each message goes to `deliver` (the adapter hands it to its `inbox.Inbox`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

READ_AHEAD_BYTES = 1 << 16
PACKETS_PER_TURN = 1000  # packets read from the buffer per turn of paho's loop
PUBACK = 0x40
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class ReadAhead:
    """A socket whose recv() is served from a 64 KiB read-ahead buffer; `pending()` tells
    paho's loop that buffered bytes wait (it then skips its select())."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._at = 0
        tcp = isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6)
        self._quickack = QUICKACK if tcp else None

    def _ack_at_once(self, option: int) -> None:
        """TCP-acknowledge what was just read now, not up to 40 ms later with our next write.
        A broker without TCP_NODELAY (mosquitto's default) holds its next small PUBLISH until
        the last one is TCP-acknowledged, and Linux delays that acknowledgement while the
        connection takes turns (a PUBLISH in, a PUBACK out): without this, each message waits
        for the PUBACK of the one before, so no commit can hold more than one."""
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, option, 1)  # not sticky: every read
        except OSError:
            self._quickack = None

    def recv(self, n: int) -> bytes:
        if self._at >= len(self._buf):
            data = self._sock.recv(max(n, READ_AHEAD_BYTES))  # BlockingIOError: paho's "again"
            if self._quickack is not None:
                self._ack_at_once(self._quickack)
            if len(data) <= n:
                return data
            self._buf, self._at = data, 0
        out = self._buf[self._at : self._at + n]
        self._at += len(out)
        return out

    def pending(self) -> int:
        return len(self._buf) - self._at

    def take_publishes(self, deliver: Callable[[Received], None]) -> int:
        """Hand every complete QoS 0/1 PUBLISH at the head of the buffer to `deliver`, parsed
        here (MQTT 3.1.1); stop at anything else or an incomplete packet (paho reads those)."""
        buf, at, end, n = self._buf, self._at, len(self._buf), 0
        while at + 1 < end:
            first = buf[at]
            if first >> 4 != 3 or first & 0x06 == 0x06 or first & 0x06 == 0x04:
                break  # not a PUBLISH, or QoS 2 (or invalid)
            length, mult, i = 0, 1, at + 1
            while i < end and i < at + 5:
                length += (buf[i] & 0x7F) * mult
                mult <<= 7
                i += 1
                if not buf[i - 1] & 0x80:
                    break
            else:
                break  # the remaining length is not all here (or is malformed: paho says)
            if i + length > end or length < 2:
                break
            top = i + 2 + int.from_bytes(buf[i : i + 2], "big")
            qos = (first & 0x06) >> 1
            mid = int.from_bytes(buf[top : top + 2], "big") if qos else 0
            if top + 2 * qos > i + length or (qos and not mid):
                break  # malformed: paho's own parsing reports it
            topic = buf[i + 2 : top].decode("utf-8", "replace")
            payload = buf[top + 2 * qos : i + length]
            self._at = at = i + length  # taken before `deliver`, which may wait for room
            deliver(Received(topic, payload, mid, qos))
            n += 1
        return n

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, ...
        return getattr(self._sock, name)


class Received:
    """One PUBLISH as the listener needs it (paho's MQTTMessage, with its lock and its
    callback matching, cost more than storing the message)."""

    __slots__ = ("mid", "payload", "qos", "topic")

    def __init__(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self.topic, self.payload, self.mid, self.qos = topic, payload, mid, qos


class ListenerClient(mqtt.Client):
    """paho's client reading ahead, handing each MQTT 3.1.1 PUBLISH (QoS 0 or 1) to `deliver`
    as a `Received`, and acknowledging in batches (see the module docstring). Leans on paho
    2's `_create_socket`, `_handle_publish`, `_in_packet`, `_out_packet` and `_sockpairW`;
    tests/test_overload.py runs it against a real broker."""

    deliver: Any = None  # called on paho's thread with each Received

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        command, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (command & 0x06) >> 1
        if self.deliver is None or qos == 2 or self._protocol == mqtt.MQTTv5:
            return super()._handle_publish()
        at = 2 + int.from_bytes(packet[:2], "big")
        topic = bytes(packet[2:at]).decode("utf-8", "replace")
        mid = 0
        if qos:
            mid = int.from_bytes(packet[at : at + 2], "big")
            at += 2
        self.deliver(Received(topic, bytes(packet[at:]), mid, qos))
        return mqtt.MQTT_ERR_SUCCESS

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        # TLS keeps its own buffer (paho asks it for pending()): left as it is
        plain = isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
        return ReadAhead(sock) if plain else sock

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        sock = self._sock
        if (
            self.deliver is not None
            and self._in_packet["command"] == 0  # between two packets
            and isinstance(sock, ReadAhead)
            and self._protocol != mqtt.MQTTv5
            and sock.take_publishes(self.deliver)
        ):
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
            return mqtt.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        turns = 1
        while (
            rc == mqtt.MQTT_ERR_SUCCESS
            and turns < PACKETS_PER_TURN
            and isinstance(self._sock, ReadAhead)
            and self._sock.pending()
        ):
            rc = super().loop_read(max_packets)
            turns += 1
        return rc

    def keep_alive(self) -> None:
        """On paho's thread while it waits for room in the inbox (it reads nothing meanwhile):
        a PINGREQ goes out with whatever is queued, so that the broker keeps the connection.
        Not paho's own ping: paho must not expect the answer before it reads again."""
        if self._sock is None:
            return
        self._send_simple_command(mqtt.PINGREQ)
        self.loop_write()

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK these QoS 1 messages in this order, in one packet write."""
        if not mids:
            return
        packet = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
        self._out_packet.append(
            {
                "command": PUBACK,
                "mid": mids[-1],
                "qos": 1,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": None,
            }
        )
        if self._sockpairW is not None:  # wake paho's loop to write it
            with contextlib.suppress(BlockingIOError):
                self._sockpairW.send(b"0")
