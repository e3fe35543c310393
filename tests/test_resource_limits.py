"""No client can hold the gateway's servers: idle and slowloris connections are cut off, an
oversized head gets 431, connections past the limit are refused at once, and running out of
descriptors refuses connections instead of killing the listener. The master keeps accepting
posts and stays master (same process, /readyz 200) throughout.

The http_listener runs with the default limits, the console with small configured ones.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers import Gateway, Proc, base_config, free_port, wait_port, wait_until

EVENT_PATH = "/api/v3/things/event.json"
CONSOLE_LIMITS = {
    "max_connections": 300,
    "header_timeout_ms": 5000,
    "body_timeout_ms": 5000,
    "idle_timeout_ms": 5000,
    "max_header_bytes": 16384,
}
LISTENER_HEADER_TIMEOUT_S = 10  # the defaults (serving.py)
LISTENER_MAX_CONNECTIONS = 1000


# ------------------------------------------------------------------ raw sockets


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (what it sent before is read and dropped)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def answer_of(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    out = b""
    try:
        while data := sock.recv(65536):
            out += data
    except TimeoutError:
        raise AssertionError(f"not closed within {timeout} s; got {out!r}") from None
    except OSError:  # reset: closed too
        pass
    return out


class Slowloris(threading.Thread):
    """Connections that send an endless request head one byte every half second."""

    HEAD = b"POST /api/v3/things/event.json HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100_000

    def __init__(self, port: int, n: int) -> None:
        super().__init__(daemon=True)
        self.socks = [connect(port) for _ in range(n)]
        self.answers = {s: b"" for s in self.socks}
        self.closed: set[socket.socket] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        for i in range(len(self.HEAD)):
            for s in self.socks:
                if s in self.closed:
                    continue
                try:
                    while data := s.recv(65536):
                        self.answers[s] += data
                    self.closed.add(s)  # EOF
                except BlockingIOError:
                    with contextlib.suppress(BlockingIOError, OSError):
                        s.send(self.HEAD[i : i + 1])
                except OSError:
                    self.closed.add(s)
            if len(self.closed) == len(self.socks) or self.stopping.wait(0.5):
                return

    def all_closed(self) -> bool:
        return len(self.closed) == len(self.socks)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        for s in self.socks:
            s.close()


# ------------------------------------------------------------------ the gateway


@dataclass
class Target:
    name: str
    port: int
    header_timeout: float
    max_connections: int


@dataclass
class LimitedGateway:
    gw: Gateway
    listener: Target
    console: Target
    posts: httpx.Client  # keep-alive clients, connected before any flood
    readyz: httpx.Client
    pid: int
    posted: int = 0

    def target(self, name: str) -> Target:
        return self.listener if name == "listener" else self.console

    def still_serving(self) -> None:
        """A valid post is accepted, and the same process is still master: else fail now."""
        try:
            r = self.posts.post(
                EVENT_PATH, json={"thing_key": "press-1", "data": {"n": self.posted}}
            )
            ready = self.readyz.get("/readyz")
        except httpx.HTTPError as exc:
            raise AssertionError(f"the gateway stopped answering: {exc!r}") from None
        assert r.status_code == 200, r.text
        assert ready.status_code == 200 and ready.json()["role"] == "master", ready.text
        assert self.gw.proc and self.gw.proc.p and self.gw.proc.p.poll() is None
        assert self.gw.proc.p.pid == self.pid
        self.posted += 1

    def serving_while(self, condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            self.still_serving()
            return condition()

        return check


@pytest.fixture
def gateway(platform, gateway_factory) -> Iterator[LimitedGateway]:
    listener_port = free_port()
    config = base_config(platform)
    config["console"] = {"limits": CONSOLE_LIMITS}
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": listener_port}
    ]
    gw = gateway_factory(config).start()
    assert gw.proc and gw.proc.p
    posts = httpx.Client(base_url=f"http://127.0.0.1:{listener_port}", timeout=10)
    readyz = httpx.Client(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=10)
    limited = LimitedGateway(
        gw=gw,
        listener=Target(
            "listener", listener_port, LISTENER_HEADER_TIMEOUT_S, LISTENER_MAX_CONNECTIONS
        ),
        console=Target(
            "console",
            gw.http_port,
            CONSOLE_LIMITS["header_timeout_ms"] / 1000,
            CONSOLE_LIMITS["max_connections"],
        ),
        posts=posts,
        readyz=readyz,
        pid=gw.proc.p.pid,
    )
    limited.still_serving()
    yield limited
    posts.close()
    readyz.close()
    wait_until(
        lambda: len(platform.events()) >= limited.posted,
        30,
        f"the {limited.posted} accepted posts at the platform",
    )


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("which", ["listener", "console"])
def test_idle_and_slowloris_connections_are_closed_after_the_header_timeout(
    gateway: LimitedGateway, which: str
) -> None:
    target = gateway.target(which)
    idle = [connect(target.port) for _ in range(200)]
    slow = Slowloris(target.port, 5)
    slow.start()
    try:
        gateway.still_serving()
        assert not any(closed_by_server(s) for s in idle), "closed before any timeout"
        wait_until(
            gateway.serving_while(lambda: all(closed_by_server(s) for s in idle)),
            target.header_timeout + 30,
            f"200 idle connections to the {which} to be closed",
        )
        wait_until(
            gateway.serving_while(slow.all_closed),
            target.header_timeout + 30,
            f"the slowloris connections to the {which} to be closed",
        )
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in slow.answers.values()), slow.answers
    finally:
        slow.stop()
        for s in idle:
            s.close()
    gateway.still_serving()


@pytest.mark.parametrize("which", ["listener", "console"])
def test_a_64_kib_header_gets_431_and_the_server_carries_on(
    gateway: LimitedGateway, which: str
) -> None:
    port = gateway.target(which).port
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with contextlib.suppress(OSError):  # the server may stop reading once it has answered
        sock.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 65536 + b"\r\n\r\n")
    assert answer_of(sock).startswith(b"HTTP/1.1 431 ")
    sock.close()
    gateway.still_serving()


@pytest.mark.parametrize("which", ["listener", "console"])
def test_connections_past_the_limit_are_refused_at_once_and_open_ones_are_served(
    gateway: LimitedGateway, which: str
) -> None:
    target = gateway.target(which)
    # the limit is full: our keep-alive clients hold a connection, these the rest
    flood = [connect(target.port) for _ in range(target.max_connections)]
    try:
        for _ in range(10):
            extra = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            with contextlib.suppress(OSError):
                extra.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = answer_of(extra, timeout=5)  # refused now, not after some timeout
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
            extra.close()
            gateway.still_serving()
    finally:
        for s in flood:
            s.close()
    # the flood gone, new connections are served again
    fresh = httpx.Client(base_url=f"http://127.0.0.1:{target.port}", timeout=5)
    path = "/readyz" if which == "console" else EVENT_PATH
    with fresh:

        def served() -> bool:
            if which == "console":
                return fresh.get(path).status_code == 200
            if fresh.post(path, json={"thing_key": "press-1", "data": {"n": 0}}).is_success:
                gateway.posted += 1
                return True
            return False

        wait_until(served, 20, f"a new connection to the {which} to be served")
    gateway.still_serving()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    gateway: LimitedGateway,
) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.console.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    sock.setblocking(False)
    wait_until(
        gateway.serving_while(lambda: closed_by_server(sock)),
        CONSOLE_LIMITS["idle_timeout_ms"] / 1000 + 30,
        "the idle keep-alive connection to be closed",
    )
    sock.close()


@pytest.fixture
def low_soft_nofile() -> Iterator[int]:
    """Start children with a soft descriptor limit of 1024 (the hard one unchanged)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard descriptor limit here is not above 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_gateway_raises_its_soft_descriptor_limit_to_the_hard_one(
    platform, gateway_factory, low_soft_nofile: int
) -> None:
    gw = gateway_factory(base_config(platform)).start(wait_master=False)
    assert gw.proc and gw.proc.p
    limits = Path(f"/proc/{gw.proc.p.pid}/limits")

    def soft_nofile() -> int:
        line = next(x for x in limits.read_text().splitlines() if x.startswith("Max open files"))
        return int(line.split()[3])

    expected = min(low_soft_nofile, 1 << 20)
    wait_until(lambda: soft_nofile() == expected, 20, f"a soft limit of {expected}")
    gw.wait_role("master")


# ------------------------------------------------------------------ one server, in its own process


class LimitedServer:
    """tests/servers/limited_server.py: serving.py around an echo app."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        script = Path(__file__).parent / "servers" / "limited_server.py"
        self.proc = Proc(
            [sys.executable, str(script), "--port", str(self.port), *args],
            tmp / f"limited-{self.port}.log",
        )

    def __enter__(self) -> LimitedServer:
        self.proc.start()
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def get(self) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}/", content=b"ping", timeout=5)

    def log_has(self, text: str) -> bool:
        return text in self.proc.log()


def test_a_stalled_body_gets_408_but_a_slow_steady_one_is_read(tmp_path: Path) -> None:
    limits = '{"body_timeout_ms": 3000}'
    with LimitedServer(tmp_path, "--limits", limits) as server:
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        assert answer_of(stalled).startswith(b"HTTP/1.1 408 ")
        stalled.close()

        steady = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        steady.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n")
        for byte in b"slow":  # a byte a second: longer than the timeout in all, never stalled
            time.sleep(1)
            steady.sendall(bytes([byte]))
        answer = b""
        while not answer.endswith(b"slow"):
            answer += steady.recv(65536) or b"<closed>"
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"slow"), answer
        steady.close()


def test_the_next_request_on_a_kept_alive_connection_has_its_own_header_deadline(
    tmp_path: Path,
) -> None:
    with LimitedServer(tmp_path, "--limits", '{"header_timeout_ms": 2000}') as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        first = b""
        while not first.endswith(b"hi"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n")  # ... and the rest never comes
        assert answer_of(sock).startswith(b"HTTP/1.1 408 ")
        sock.close()


def test_pipelined_and_keep_alive_requests_are_served_as_before(tmp_path: Path) -> None:
    with LimitedServer(tmp_path) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi"
        sock.sendall(request * 3)
        answers = b""
        while answers.count(b"HTTP/1.1 200 ") < 3:
            answers += sock.recv(65536)
        sock.close()
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert all(
                client.post("/", content=b"x" * 100_000).content == b"x" * 100_000 for _ in range(5)
            )


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_out_of_descriptors_connections_are_refused_and_the_listener_survives(
    tmp_path: Path, loop: str
) -> None:
    with LimitedServer(tmp_path, "--nofile", "128", "--loop", loop) as server:
        assert server.get().status_code == 200
        server.proc.signal(signal.SIGUSR1)  # the server opens descriptors until none is left
        wait_until(lambda: server.log_has("hogged"), 10, "the server to run out of descriptors")
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = answer_of(sock, timeout=5)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
            sock.close()
        assert server.proc.p and server.proc.p.poll() is None
        assert server.log_has("out of file descriptors")
        server.proc.signal(signal.SIGUSR2)
        wait_until(lambda: server.log_has("freed"), 10, "the descriptors to be given back")
        wait_until(lambda: server.get().status_code == 200, 10, "the listener to serve again")


def test_a_descriptor_limit_too_small_for_the_connection_limit_is_said(tmp_path: Path) -> None:
    with LimitedServer(tmp_path, "--nofile", "512") as server:
        wait_until(lambda: server.log_has("LimitNOFILE"), 10, "a warning naming LimitNOFILE")
        assert server.get().status_code == 200


def test_a_request_that_is_not_http_gets_400(tmp_path: Path) -> None:
    with LimitedServer(tmp_path) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
        assert answer_of(sock).startswith(b"HTTP/1.1 400 ")
        sock.close()
        assert server.get().status_code == 200
