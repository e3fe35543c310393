"""The `datonis-edge` command: run, demo, status, config, declined, console, platform-sim."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__, logs
from .config import ConfigError
from .console.commands import app as console_app
from .root_config import Config, load_config

log = logging.getLogger(__name__)

app = typer.Typer(
    help="datonis-edge: industrial IoT edge gateway with store-and-forward and failover.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
declined_app = typer.Typer(
    help="Batches the platform refused: list, replay, purge.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(declined_app, name="declined")
app.add_typer(console_app, name="console")

EXIT_CONFIG = 2

DataDir = Annotated[
    Path,
    typer.Option(
        "--datadirpath",
        envvar="DATONIS_EDGE_DATADIRPATH",
        help="The data directory (shared between master and standbys).",
    ),
]


_json_logs = False  # --log-format json: errors are log records too, for the log shipper


def say_error(message: str) -> None:
    """One error line for the user: plain text, or a JSON log record with --log-format json."""
    if _json_logs:
        log.error("%s", message)
    else:
        typer.echo(message, err=True)


def fail(message: str, code: int = EXIT_CONFIG) -> typer.Exit:
    say_error(f"error: {message}")
    return typer.Exit(code)


LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level", envvar="DATONIS_EDGE_LOG_LEVEL", help=f"One of {', '.join(logs.LEVELS)}."
    ),
]
LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="DATONIS_EDGE_LOG_FORMAT",
        help="text, or json: one JSON object per line for log shippers.",
    ),
]


def setup_logging(level: str, fmt: str = "text") -> None:
    problem = logs.level_problem(level) or logs.format_problem(fmt)
    if problem:
        raise fail(problem)
    logs.setup(level, fmt)
    global _json_logs
    _json_logs = fmt.lower() == "json"


def _check_datadir(datadir: Path) -> None:
    """Everything the instance will write is writable, or one sentence and exit 2."""
    from .datadir import root_warning, writable_problem

    problem = writable_problem(datadir)
    if problem:
        raise fail(problem)
    warning = root_warning(datadir)
    if warning:
        log.warning(warning)


def _require_datadir(datadir: Path) -> None:
    from .datadir import not_a_datadir

    problem = not_a_datadir(datadir)
    if problem:
        raise fail(problem)


def _import_config(datadir: Path, source: Path | None) -> Config:
    from .datadir import DataDirError, import_config

    try:
        return import_config(datadir, source)
    except DataDirError as exc:
        raise fail(str(exc)) from None
    except ConfigError as exc:
        for line in exc.problems:
            say_error(line)
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def run(
    datadirpath: DataDir,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="DATONIS_EDGE_CONFIG",
            help="Import this config into DIR/config/edge.yaml.",
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port",
            envvar="DATONIS_EDGE_HTTP_PORT",
            help="Console/API port (default: console.port of the config, else 8080).",
        ),
    ] = None,
    http_host: Annotated[
        str | None,
        typer.Option(
            "--http-host",
            envvar="DATONIS_EDGE_HTTP_HOST",
            help="Console address (default: console.host of the config, else 0.0.0.0).",
        ),
    ] = None,
    instance_id: Annotated[
        str | None, typer.Option("--instance-id", envvar="DATONIS_EDGE_INSTANCE_ID")
    ] = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
) -> None:
    """Run the gateway service: master if it takes the data-directory lock, else standby."""
    setup_logging(log_level, log_format)
    _check_datadir(datadirpath)
    cfg = _import_config(datadirpath, config)
    from .console.tls import TlsError
    from .instance import run_instance
    from .serving import PortError

    port = http_port or cfg.console.port or 8080
    host = http_host or cfg.console.host or "0.0.0.0"
    try:
        code = _run_loop(run_instance(datadirpath, cfg, port, host, instance_id))
    except (PortError, TlsError) as exc:
        raise fail(str(exc)) from None
    if code != 0:
        # mastership lost: leave now, even if a file call is stuck on a hung NFS server
        logging.shutdown()
        os._exit(code)
    raise typer.Exit(code)


@app.command()
def demo(
    http_port: Annotated[int, typer.Option("--http-port", envvar="DATONIS_EDGE_HTTP_PORT")] = 8080,
    sim_port: Annotated[
        int, typer.Option("--platform-port", help="Platform simulator port.")
    ] = 8090,
    listener_port: Annotated[
        int, typer.Option("--listener-port", help="http_listener port.")
    ] = 8081,
    datadirpath: Annotated[Path | None, typer.Option("--datadirpath")] = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
) -> None:
    """A simulated machine, the gateway and the local Datonis platform simulator, in one command."""
    setup_logging(log_level, log_format)
    if datadirpath is not None:
        _check_datadir(datadirpath)
    from .instance import run_demo
    from .serving import PortError

    try:
        _run_loop(run_demo(http_port, sim_port, listener_port, datadirpath))
    except PortError as exc:
        raise fail(f"{exc} (the demo's ports are changeable: see --help)") from None
    except KeyboardInterrupt:
        pass


@app.command()
def status(datadirpath: DataDir) -> None:
    """Who is master of DIR (exit 1 if no live master), the epoch, the standbys, the outbox."""
    from .ha.liveness import master_view
    from .ha.state import HaFiles

    _require_datadir(datadirpath)
    view = master_view(datadirpath)
    ha = HaFiles(datadirpath) if (datadirpath / "ha").is_dir() else None
    typer.echo(f"data directory: {datadirpath}")
    typer.echo(f"epoch:          {ha.read_epoch() if ha else 0}")
    master = view.info
    if master and view.live:
        typer.echo(
            f"master:         {master.get('instance_id')} on {master.get('host')} pid {master.get('pid')}, "
            f"since {_when(master.get('since_ms'))}, last heartbeat {view.heartbeat_age_s:.1f} s ago"
        )
        typer.echo(f"console:        {master.get('console_url')}")
    else:
        typer.echo(f"master:         {view.why_not_live()}")
    if master and "outbox" in master:
        ob, c = master["outbox"], master.get("counters", {})
        typer.echo(
            f"outbox:         {ob['pending']} events pending ({ob['bytes']} bytes)"
            f"{'' if view.live else ' at the last heartbeat'}; "
            f"accepted {c.get('accepted', 0)}, delivered {c.get('delivered', 0)}, "
            f"declined {c.get('declined', 0)}, evicted {c.get('evicted', 0)}"
        )
    now = time.time() * 1000
    for sb in ha.read_standbys() if ha else []:
        age = (now - sb.get("heartbeat_ms", 0)) / 1000
        if age <= view.limit_s:
            typer.echo(
                f"standby:        {sb.get('instance_id')} on {sb.get('host')} (heartbeat {age:.1f} s ago)"
            )
    typer.echo(f"declined:       {_declined_store(datadirpath).count()} batches")
    if not view.live:
        raise typer.Exit(1)


def _when(ms: int | None) -> str:
    if not ms:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="The config file to check.")],
) -> None:
    """Exit 0 if FILE is a valid configuration, else one line per problem and exit 2."""
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    typer.echo(f"{file}: valid ({len(cfg.services)} services, {len(cfg.thing_keys())} things)")


def _declined_store(datadir: Path):  # type: ignore[no-untyped-def]
    from .store.declined import DeclinedStore

    return DeclinedStore(datadir / "declined")


def _declined_to_change(datadir: Path, ids: list[str] | None):  # type: ignore[no-untyped-def]
    """The declined store of a data directory we may write, and the batches `ids` names."""
    _require_datadir(datadir)
    _check_datadir(datadir)
    store = _declined_store(datadir)
    return store, store.find(ids)


@declined_app.command("list")
def declined_list(
    datadirpath: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List declined batches with their status and reason."""
    _require_datadir(datadirpath)
    items = _declined_store(datadirpath).list()
    if as_json:
        import orjson

        typer.echo(orjson.dumps([i.summary() for i in items], option=orjson.OPT_INDENT_2).decode())
        return
    if not items:
        typer.echo("no declined batches")
        return
    typer.echo(f"{'ID':40} {'STATUS':6} {'EVENTS':>6}  {'DECLINED AT':23}  REASON")
    for i in items:
        mark = " (replay requested)" if i.replay_requested else ""
        typer.echo(
            f"{i.id:40} {i.status!s:6} {i.count:>6}  {_when(i.declined_at_ms):23}  {i.reason}{mark}"
        )


@declined_app.command("replay")
def declined_replay(
    datadirpath: DataDir,
    ids: Annotated[list[str] | None, typer.Argument(help="IDs to replay; none: all.")] = None,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the master.")] = 10.0,
) -> None:
    """Put declined batches back into the outbox (after the keys or the data were fixed)."""
    from .ha.lock import DataDirLock
    from .ha.state import HaFiles
    from .store.outbox import Outbox

    store, items = _declined_to_change(datadirpath, ids)
    if not items:
        raise fail(
            "nothing to replay" + (f": no declined batch named {', '.join(ids)}" if ids else ""), 1
        )
    for item in items:
        store.request_replay(item)
    total = sum(i.count for i in items)
    ha = HaFiles(datadirpath)
    lock = DataDirLock(ha.lock_path)
    try:
        if lock.try_acquire():  # no gateway runs: move them into the outbox ourselves
            outbox = Outbox(datadirpath / "outbox")
            outbox.open()
            try:
                for item in store.replay_requests():
                    outbox.append_sync(item.events or [])
                    store.remove(item)
            finally:
                outbox.close()
            typer.echo(
                f"{len(items)} batches ({total} events) are back in the outbox; they go out when the gateway starts"
            )
            return
    finally:
        lock.close()
    master = ha.read_master() or {}
    typer.echo(
        f"{len(items)} batches ({total} events) marked for replay; master {master.get('instance_id', '?')} picks them up"
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not store.replay_requests():
            typer.echo("the master has put them back into the outbox")
            return
        time.sleep(0.2)
    typer.echo(
        "the master has not picked them up yet; they stay marked and go out when a master runs"
    )


@declined_app.command("purge")
def declined_purge(
    datadirpath: DataDir,
    ids: Annotated[list[str] | None, typer.Argument(help="IDs to delete; none: all.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete declined batches for good (asks first)."""
    store, items = _declined_to_change(datadirpath, ids)
    if not items:
        typer.echo("no declined batches to purge")
        return
    total = sum(i.count for i in items)
    if not yes and not typer.confirm(
        f"delete {len(items)} declined batches ({total} events) for good?"
    ):
        raise fail("nothing deleted", 1)
    for item in items:
        store.remove(item)
    typer.echo(f"deleted {len(items)} declined batches ({total} events)")


@app.command("platform-sim")
def platform_sim(
    port: Annotated[int, typer.Option("--port")] = 8090,
    access_key: Annotated[str, typer.Option("--access-key")] = "demo-access-key",
    secret_key: Annotated[str, typer.Option("--secret-key")] = "demo-secret-key",
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Count events, keep none (benchmarks).")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate.")
    ] = None,
    mqtt_broker: Annotated[
        str | None,
        typer.Option(
            "--mqtt-broker",
            help="The MQTT side too: mqtt://user:password@host:port of the broker the gateway "
            "logs in to (platform_sim/mqtt_side.py).",
        ),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its PEM key.")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option("--tls-client-ca", help="Require client certificates signed by this CA."),
    ] = None,
) -> None:
    """Run the local stand-in for the Datonis platform API."""
    setup_logging("warning")
    from .platform_sim.app import create_app
    from .serving import PortError, bind_socket, serve_app

    tls = _sim_tls(tls_cert, tls_key, tls_client_ca)

    async def main() -> None:
        sock = bind_socket(host, port, "platform-sim")
        scheme = "https" if tls else "http"
        typer.echo(f"platform simulator on {scheme}://{host}:{port} (control API under /sim)")
        await serve_app(
            create_app(access_key, secret_key, record=not no_record, mqtt_broker=mqtt_broker),
            sock,
            name="platform simulator",
            **tls,
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):
            _run_loop(main())
    except PortError as exc:
        raise fail(str(exc)) from None


def _sim_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> dict[str, Any]:
    """uvicorn's TLS settings for the simulator, the files checked first."""
    if cert is None:
        if key or client_ca:
            raise fail("--tls-key and --tls-client-ca need --tls-cert (the server certificate)")
        return {}
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not path.is_file():
            raise fail(f"{flag}: {path} not found; give a PEM file")
    tls: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key) if key else None}
    if client_ca is not None:
        tls |= {"ssl_ca_certs": str(client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return tls


def _run_loop(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except Exception as exc:  # the last resort: a user gets one sentence, the trace goes to the log
        logging.getLogger("datonis_edge").debug("unexpected error", exc_info=True)
        typer.echo(
            f"error: {exc.__class__.__name__}: {exc}. This is a bug in datonis-edge; run again "
            "with --log-level debug for the details and report them.",
            err=True,
        )
        raise SystemExit(1) from None
