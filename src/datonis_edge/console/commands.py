"""`datonis-edge console token|user ...`: the console's API tokens and users, changed in the
data directory's `console/` files (a running gateway sees the change at its next request).
Every change is written to the audit log as coming from `cli USER@HOST`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer

app = typer.Typer(help="The web console's users and API tokens.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens for scripts (Authorization: Bearer ...).", no_args_is_help=True
)
user_app = typer.Typer(help="Users who log in to the console.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")

DataDir = Annotated[
    Path,
    typer.Option(
        "--datadirpath",
        envvar="DATONIS_EDGE_DATADIRPATH",
        help="The data directory (shared between master and standbys).",
    ),
]
T = TypeVar("T")
Role = Annotated[str, typer.Option("--role", help="admin (may change things) or viewer (reads).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _store(datadir: Path):  # type: ignore[no-untyped-def]
    from ..datadir import not_a_datadir
    from .auth import ConsoleStore

    if not datadir.is_dir():
        raise _fail(f"{datadir} is not a directory; give the gateway's --datadirpath")
    # before the first start (provisioning) an empty directory is fine too
    problem = not_a_datadir(datadir)
    if problem and any(datadir.iterdir()) and not (datadir / "console").is_dir():
        raise _fail(problem)
    return ConsoleStore(datadir)


def _audit(datadir: Path, action: str, **details: object) -> None:
    from .auth.audit import AuditLog, cli_origin

    origin = cli_origin()
    AuditLog(datadir).record(origin.split(" ", 1)[1], action, origin, **details)


def _apply(datadir: Path, change: Callable[[], T], action: str, **details: object) -> T:
    """Make the change (a refusal: its sentence, exit 1), then audit it."""
    from .auth import AuthError

    try:
        result = change()
    except AuthError as exc:
        raise _fail(str(exc)) from None
    _audit(datadir, action, **details)
    return result


def _when(ms: int | None) -> str:
    if not ms:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------- tokens


@token_app.command("create")
def token_create(name: str, datadirpath: DataDir, role: Role = "viewer") -> None:
    """Create an API token and print it (once: only its hash is kept)."""
    store = _store(datadirpath)
    token = _apply(
        datadirpath, lambda: store.create_token(name, role), "token_created", token=name, role=role
    )
    typer.echo(token)
    typer.echo(
        f"token '{name}' ({role}) created; it is shown this once. Send it as "
        "`Authorization: Bearer <token>`.",
        err=True,
    )


@token_app.command("list")
def token_list(datadirpath: DataDir) -> None:
    """The tokens: name, role, created, last used (never the tokens themselves)."""
    tokens = _store(datadirpath).tokens()
    if not tokens:
        typer.echo("no API tokens")
        return
    typer.echo(f"{'NAME':24} {'ROLE':7} {'CREATED':23}  LAST USED")
    for t in tokens:
        typer.echo(f"{t.name:24} {t.role:7} {_when(t.created_ms):23}  {_when(t.last_used_ms)}")


@token_app.command("revoke")
def token_revoke(name: str, datadirpath: DataDir) -> None:
    """Revoke a token: the next request with it gets 401."""
    store = _store(datadirpath)
    _apply(datadirpath, lambda: store.revoke_token(name), "token_revoked", token=name)
    typer.echo(f"token '{name}' revoked")


# ---------------------------------------------------------------------- users


def _read_password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    first = typer.prompt("password", hide_input=True)
    if typer.prompt("password again", hide_input=True) != first:
        raise _fail("the two passwords differ; nothing changed")
    return first


@user_app.command("add")
def user_add(
    name: str,
    datadirpath: DataDir,
    role: Role = "viewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a user (asks for the password twice, or reads it from standard input)."""
    store = _store(datadirpath)
    if store.user(name) is not None:
        raise _fail(
            f"the user '{name}' exists already; change the password with "
            f"`datonis-edge console user passwd {name}`"
        )
    password = _read_password(password_stdin)
    _apply(
        datadirpath,
        lambda: store.add_user(name, password, role),
        "user_added",
        user=name,
        role=role,
    )
    typer.echo(f"user '{name}' ({role}) added")


@user_app.command("passwd")
def user_passwd(
    name: str,
    datadirpath: DataDir,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set a user's password (ends the user's sessions)."""
    store = _store(datadirpath)
    if store.user(name) is None:
        known = ", ".join(sorted(store.users())) or "none"
        raise _fail(f"there is no user '{name}' (users: {known})")
    password = _read_password(password_stdin)
    _apply(datadirpath, lambda: store.set_password(name, password), "password_changed", user=name)
    typer.echo(f"password of '{name}' changed; the user's sessions have ended")


@user_app.command("remove")
def user_remove(name: str, datadirpath: DataDir) -> None:
    """Remove a user (not the last admin); the user's sessions end."""
    store = _store(datadirpath)
    _apply(datadirpath, lambda: store.remove_user(name), "user_removed", user=name)
    typer.echo(f"user '{name}' removed")


@user_app.command("list")
def user_list(datadirpath: DataDir) -> None:
    """The users and their roles."""
    users = _store(datadirpath).users()
    if not users:
        typer.echo("no users yet (the first start creates 'admin')")
        return
    for u in sorted(users.values(), key=lambda u: u.name):
        note = " (must change the password)" if u.must_change else ""
        typer.echo(f"{u.name:24} {u.role}{note}")
