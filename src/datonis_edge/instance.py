"""Putting an instance together: the supervisor plus the console server; and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import tempfile
from importlib import resources
from pathlib import Path

import yaml

from . import systemd
from .console.app import create_app
from .console.auth import Auth, ConsoleStore, first_start
from .console.auth.passwords import generate_password
from .console.tls import server_context
from .root_config import parse_config
from .serving import bind_socket, serve_app
from .supervisor import Supervisor

log = logging.getLogger(__name__)


async def run_instance(
    datadir: Path,
    config,
    http_port: int,
    http_host: str = "0.0.0.0",
    instance_id: str | None = None,
    on_ready=None,
) -> int:
    tls = server_context(config.console)  # a bad certificate: one sentence, before we bind
    sock = bind_socket(http_host, http_port, "console (--http-port)")
    # Bulk JSON makes thousands of short-lived containers per request; the default gen-0
    # threshold (700) would run the cyclic GC several times per request. Objects alive
    # after start-up are frozen out of every collection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    supervisor = Supervisor(
        datadir,
        config,
        http_port,
        instance_id,
        console_host=http_host,
        console_scheme="https" if tls else "http",
    )
    first_start(datadir, supervisor.console_url)
    app = create_app(supervisor, Auth(datadir, config.console))
    https = (
        {"ssl_certfile": config.console.tls_cert, "ssl_keyfile": config.console.tls_key}
        if tls
        else {}
    )
    console = asyncio.create_task(
        serve_app(app, sock, config.console.limits, "console", **https), name="console"
    )
    watchdog = asyncio.create_task(systemd.watchdog_pings(), name="watchdog")
    scheme = "https" if tls else "http"
    log.info(
        "instance %s: console on %s://%s:%d", supervisor.instance_id, scheme, http_host, http_port
    )
    systemd.ready(f"console on port {http_port}; master or standby of {datadir}")
    if on_ready is not None:
        on_ready(supervisor)
    try:
        return await supervisor.run()
    finally:
        systemd.stopping()
        watchdog.cancel()
        console.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await console


def demo_config_text(**values: str) -> str:
    """The demo's configuration (the package's demo.yaml) with its ${DEMO_*} values filled in."""
    text = resources.files(__package__).joinpath("demo.yaml").read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


async def run_demo(http_port: int, sim_port: int, listener_port: int, datadir: Path | None) -> None:
    from .platform_sim.app import create_app as create_sim

    access_key, secret_key = "demo-" + secrets.token_hex(4), secrets.token_hex(16)
    tmp = None
    if datadir is None:
        tmp = tempfile.TemporaryDirectory(prefix="datonis-edge-demo-")
        datadir = Path(tmp.name)
    text = demo_config_text(
        DEMO_PLATFORM_PORT=str(sim_port),
        DEMO_ACCESS_KEY=access_key,
        DEMO_SECRET_KEY=secret_key,
        DEMO_LISTENER_PORT=str(listener_port),
    )
    config = parse_config(yaml.safe_load(text), "demo config")
    (datadir / "config").mkdir(parents=True, exist_ok=True)
    (datadir / "config" / "edge.yaml").write_text(text)
    login = _demo_login(datadir)
    sim_sock = bind_socket("127.0.0.1", sim_port, "platform simulator (--platform-port)")
    sim = asyncio.create_task(
        serve_app(create_sim(access_key, secret_key), sim_sock, name="platform simulator")
    )

    def announce(sup: Supervisor) -> None:
        print(
            "\n  datonis-edge demo is running (Ctrl-C to stop)\n"
            f"  console:            http://127.0.0.1:{http_port}/  ({login})\n"
            f"  status API:         http://127.0.0.1:{http_port}/api/v1/status (needs a token: "
            f"datonis-edge console token create me --role viewer --datadirpath {datadir})\n"
            f"  platform simulator: http://127.0.0.1:{sim_port}/sim/stats\n"
            f"  push events:        curl -X POST http://127.0.0.1:{listener_port}/api/v3/things/event.json "
            '-d \'{"thing_key":"press-1","data":{"temperature":61.5}}\'\n'
            f"  data directory:     {datadir}\n",
            flush=True,
        )

    try:
        await run_instance(datadir, config, http_port, "127.0.0.1", "demo", on_ready=announce)
    finally:
        sim.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sim
        if tmp is not None:
            tmp.cleanup()


def _demo_login(datadir: Path) -> str:
    """The demo's console login: a fresh data directory gets `admin` with a generated password
    (no forced change: the demo is for looking around); one with users keeps them."""
    store = ConsoleStore(datadir)
    if store.users_path.exists():
        return f"log in with a user of {store.users_path}"
    password = generate_password()
    store.add_user("admin", password, "admin")
    return f"log in as admin, password {password}"
