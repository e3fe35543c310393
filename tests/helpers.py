"""Real processes on free loopback ports: the platform simulator, mosquitto, gateway instances."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

BIN = Path(sys.executable).parent
EDGE = str(BIN / "datonis-edge")


def api_token(datadir: Path, name: str, role: str = "admin") -> str:
    """A console API token in `datadir` (made anew if one of that name exists), as the CLI's
    `console token create` makes it: the tests and benchmarks call the API with it."""
    from datonis_edge.console.auth import AuthError, ConsoleStore

    store = ConsoleStore(datadir)
    if not store.users_path.exists():
        # no users, rather than a generated admin and its WARNING in every test's log: the
        # tests of the first start remove this file (tests/test_console_auth.py)
        store.dir.mkdir(parents=True, exist_ok=True)
        store.users_path.write_text('{"version": 1, "users": {}}')
    try:
        return store.create_token(name, role)
    except AuthError:
        store.revoke_token(name)
        return store.create_token(name, role)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last_exc = exc
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what}"
        + (f" (last error: {last_exc})" if last_exc else "")
    )


def wait_port(port: int, timeout: float = 10.0) -> None:
    def is_open() -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(is_open, timeout, f"port {port} to open")


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log
        self.env = env
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
        )
        return self

    def signal(self, sig: int) -> None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.p:
            self.p.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._log.close()
        return self.p.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class PlatformSim:
    def __init__(
        self,
        tmp: Path,
        access_key: str = "test-ak",
        secret_key: str = "test-sk",
        port: int | None = None,
        mqtt_broker: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.access_key, self.secret_key = access_key, secret_key
        self.url = f"http://127.0.0.1:{self.port}"
        self.mqtt_broker = mqtt_broker
        args = [
            EDGE,
            "platform-sim",
            "--port",
            str(self.port),
            "--access-key",
            access_key,
            "--secret-key",
            secret_key,
        ]
        if mqtt_broker:
            args += ["--mqtt-broker", mqtt_broker]
        self.proc = Proc(args, tmp / f"platform-sim-{self.port}.log")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> PlatformSim:
        self.proc.start()
        wait_port(self.port)
        if self.mqtt_broker:
            wait_until(lambda: self.mqtt()["connected"], 10, "the simulator's MQTT login")
        return self

    def mqtt(self) -> dict[str, Any]:
        """The MQTT side's counts (messages, bad_hash, lzf, ack_<code>, not_acked, ...)."""
        return self.http.get("/sim/mqtt").json()

    def mqtt_fault(self, **spec: Any) -> None:
        self.http.post("/sim/mqtt/faults", json=spec).raise_for_status()

    def send_instruction(self, thing_key: str, instruction: dict[str, Any], **spec: Any) -> str:
        """Publish a signed instruction (bad_hash=True: one whose hash does not match)."""
        body = {"thing_key": thing_key, "instruction": instruction, **spec}
        r = self.http.post("/sim/instructions", json=body)
        r.raise_for_status()
        return r.json()["alert_key"]

    def instructions(self) -> dict[str, Any]:
        return self.http.get("/sim/instructions").json()

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()

    def stats(self) -> dict[str, Any]:
        return self.http.get("/sim/stats").json()

    def events(self) -> list[dict[str, Any]]:
        return self.http.get("/sim/events").json()["events"]

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/sim/requests").json()["requests"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.http.get("/sim/alerts").json()["alerts"]

    def fault(self, **spec: Any) -> None:
        self.http.post("/sim/faults", json=spec).raise_for_status()

    def set_keys(self, access_key: str, secret_key: str) -> None:
        self.http.post(
            "/sim/keys", json={"access_key": access_key, "secret_key": secret_key}
        ).raise_for_status()


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(path):
        raise RuntimeError("mosquitto is not installed; `make test` installs it with apt-get")
    return path


class Mosquitto:
    """A mosquitto on a free port. `users` (name → password): logins checked against a
    password file (no anonymous access; `set_users` replaces them in the running broker).
    `tls` (certificate, key): a second listener, `tls_port`, speaking TLS."""

    def __init__(
        self,
        tmp: Path,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        conf = tmp / f"mosquitto-{self.port}.conf"
        store = tmp / f"mosquitto-{self.port}"
        store.mkdir()
        self.password_file = tmp / f"mosquitto-{self.port}.passwd"
        text = (
            f"listener {self.port} 127.0.0.1\npersistence true\n"
            f"persistence_location {store}/\nmax_queued_messages 100000\n"
        )
        if users is None:
            text += "allow_anonymous true\n"
        else:
            self._write_users(users)
            text += f"allow_anonymous false\npassword_file {self.password_file}\n"
            if os.geteuid() == 0:  # else it drops to `mosquitto`, who cannot read tmp_path
                text += "user root\n"
        self.tls_port: int | None = None
        if tls is not None:
            self.tls_port = free_port()
            text += f"listener {self.tls_port} 127.0.0.1\ncertfile {tls[0]}\nkeyfile {tls[1]}\n"
        conf.write_text(text)
        self.proc = Proc([mosquitto_binary(), "-c", str(conf)], tmp / f"mosquitto-{self.port}.log")

    def _write_users(self, users: dict[str, str]) -> None:
        self.password_file.write_text("")
        for user, password in users.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(self.password_file), user, password],
                check=True,
                capture_output=True,
            )

    def set_users(self, users: dict[str, str]) -> None:
        """Replace the logins; the running broker rereads them (SIGHUP)."""
        self._write_users(users)
        self.proc.signal(signal.SIGHUP)

    def start(self) -> Mosquitto:
        """Start (again, after a stop: same port, same persistent store)."""
        self.proc.start()
        wait_port(self.port)
        if self.tls_port is not None:
            wait_port(self.tls_port)
        return self

    def stop(self) -> None:
        self.proc.stop()


def base_config(sim: PlatformSim | None, **cloud: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "protocol": "http",
        "endpoint": sim.url if sim else f"http://127.0.0.1:{free_port()}",
        "access_key": sim.access_key if sim else "ak",
        "secret_key": sim.secret_key if sim else "sk",
        "bulk_max_elements": 25,
        "bulk_transmit_interval_ms": 50,
        "request_timeout_ms": 2000,
        "retry_max_backoff_ms": 1000,
        "heartbeat_interval_ms": 0,
    }
    c.update(cloud)
    if c["protocol"] == "mqtt_broker":  # a broker has no Datonis keys (unknown keys are errors)
        del c["access_key"], c["secret_key"]
    return {"cloud": c, "services": []}


class Gateway:
    """One `datonis-edge run` process on a data directory."""

    def __init__(
        self, tmp: Path, datadir: Path, config: dict[str, Any] | None, name: str = "gw"
    ) -> None:
        self.tmp = tmp
        self.datadir = datadir
        self.http_port = free_port()
        self.name = name
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = tmp / f"{name}-edge.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
        self.proc: Proc | None = None
        self.token = api_token(datadir, f"tests-{name}")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}",
            timeout=10,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        self.starts = 0

    def start(self, wait_master: bool = True) -> Gateway:
        args = [
            EDGE,
            "run",
            "--datadirpath",
            str(self.datadir),
            "--http-port",
            str(self.http_port),
            "--http-host",
            "127.0.0.1",
            "--instance-id",
            f"{self.name}",
        ]
        if self.config_path is not None and self.starts == 0:
            args += ["--config", str(self.config_path)]
        self.starts += 1
        self.proc = Proc(args, self.tmp / f"{self.name}.log").start()
        if wait_master:
            self.wait_role("master")
        return self

    def status(self) -> dict[str, Any]:
        return self.http.get("/api/v1/status").json()

    def wait_role(self, role: str, timeout: float = 20) -> dict[str, Any]:
        def check() -> Any:
            assert self.proc and self.proc.p
            if self.proc.p.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self.proc.p.returncode}:\n{self.proc.log()[-3000:]}"
                )
            st = self.status()
            return (
                st
                if st["role"] == role
                and all(
                    s["state"] not in ("starting", "connecting") for s in st.get("services", [])
                )
                else None
            )

        return wait_until(check, timeout, f"{self.name} to be {role}")

    def kill(self) -> None:
        assert self.proc
        self.proc.kill()

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc else None

    def close(self) -> None:
        self.stop()
        self.http.close()

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EDGE, *args], input=input, capture_output=True, text=True, timeout=60
        )


def good_and_flaky(
    service: dict[str, Any],
    good: dict[str, Any],
    flaky: dict[str, Any],
    a: dict[str, Any],
    b: dict[str, Any],
) -> dict[str, Any]:
    """A service polling device "good" (tag a, thing m1) and device "flaky" (tag b, thing m2)
    every 100 ms, backing off at most 500 ms: the shape silence_one_device() checks."""
    return {
        "name": "line",
        "scan_interval_ms": 100,
        "retry_max_backoff_ms": 500,
        **service,
        "devices": [{"name": "good", **good}, {"name": "flaky", **flaky}],
        "tags": [{"name": "a", "device": "good", **a}, {"name": "b", "device": "flaky", **b}],
        "things": [
            {"thing_key": "m1", "metrics": [{"name": "a", "tag": "a"}]},
            {"thing_key": "m2", "metrics": [{"name": "b", "tag": "b"}]},
        ],
    }


def silence_one_device(
    gw: Gateway, platform: PlatformSim, flaky: Proc, good_scans: int = 5, timeout: float = 20.0
) -> dict[str, dict[str, Any]]:
    """What every polling adapter promises of a device that stops answering (a good_and_flaky
    service): silenced (SIGSTOP: alive, its requests time out), "flaky" is shown down and the
    service degraded, while "good" keeps delivering at its own pace (`good_scans` readings
    within `timeout` s) and "flaky" delivers at most a read already under way; revived, it
    delivers again, the service runs again, and the log said "does not answer" and "answers
    again" once each. Returns the devices' status entries, by name, while "flaky" was down."""

    def count(thing_key: str, events: list[dict[str, Any]] | None = None) -> int:
        return sum(
            1
            for e in (platform.events() if events is None else events)
            if e["thing_key"] == thing_key
        )

    wait_until(lambda: count("m1") and count("m2"), what="both devices delivering")
    flaky.signal(signal.SIGSTOP)
    svc = wait_until(
        lambda: (s := gw.status()["services"][0])["state"] == "degraded" and s,
        what="the silent device reported down",
    )
    devices = {d["name"]: d for d in svc["details"]["devices"]}
    assert devices["flaky"]["connected"] is False and devices["flaky"]["last_error"]
    assert devices["good"]["connected"] is True
    seen = len(platform.events())
    m1_before = count("m1")
    wait_until(
        lambda: count("m1") >= m1_before + good_scans, timeout, "the good device keeps going"
    )
    assert count("m2", platform.events()[seen:]) <= 1  # at most a read already under way
    flaky.signal(signal.SIGCONT)
    m2_before = count("m2")
    wait_until(lambda: count("m2") > m2_before + 2, 30, "the silent device resumes")
    wait_until(lambda: gw.status()["services"][0]["state"] == "running", what="healthy again")
    log = gw.proc.log() if gw.proc else ""
    assert log.count("does not answer") == 1 and log.count("answers again") == 1
    return devices


class ModbusServer:
    """tests/servers/modbus_server.py in its own process (SIGSTOP makes it a dead device)."""

    def __init__(self, tmp: Path, spec: dict[str, Any], name: str = "modbus") -> None:
        import json

        self.port = free_port()
        spec_path = tmp / f"{name}-{self.port}.json"
        spec_path.write_text(json.dumps(spec))
        self.count_file = tmp / f"{name}-{self.port}.count"
        script = Path(__file__).parent / "servers" / "modbus_server.py"
        self.proc = Proc(
            [
                sys.executable,
                str(script),
                "--port",
                str(self.port),
                "--spec",
                str(spec_path),
                "--count-file",
                str(self.count_file),
            ],
            tmp / f"{name}-{self.port}.log",
        )

    def start(self) -> ModbusServer:
        self.proc.start()
        wait_port(self.port)
        return self

    def requests(self) -> int:
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def stop(self) -> None:
        self.proc.signal(signal.SIGCONT)
        self.proc.stop()


class OpcUaServer:
    """tests/servers/opcua_server.py in its own process; restartable on the same port."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/test/"
        script = Path(__file__).parent / "servers" / "opcua_server.py"
        self.args = [sys.executable, str(script), "--port", str(self.port), *extra]
        self.log = tmp / f"opcua-{self.port}.log"
        self.proc: Proc | None = None

    def start(self) -> OpcUaServer:
        self.proc = Proc(self.args, self.log).start()
        wait_port(self.port, timeout=30)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


COUNTER = {"name": "n", "tag": "counter(0, 1)"}


def simulator_service(
    thing_key: str = "press-1",
    *metrics: dict[str, Any],
    scan_interval_ms: int = 50,
    name: str = "line",
    **extra: Any,
) -> dict[str, Any]:
    """A simulator service with one thing (by default a counter metric `n`), for configs."""
    return {
        "name": name,
        "type": "simulator",
        "scan_interval_ms": scan_interval_ms,
        "things": [{"thing_key": thing_key, "metrics": list(metrics) or [COUNTER]}],
        **extra,
    }
