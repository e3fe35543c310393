"""The data directory as a starting instance or a CLI command meets it: checks before use,
and importing the configuration into it.

Every fault here has one sentence naming the path, the cause and the command that fixes it,
because the alternative is a traceback deep inside the lock, the outbox or the declined store
(one `sudo datonis-edge run` leaves root-owned files that the service user cannot open).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

from .root_config import Config, load_config

log = logging.getLogger(__name__)

# everything an instance writes, relative to the data directory; a directory is checked with
# the files directly inside it (not hidden ones: temp files of other processes)
WRITTEN_DIRS = (
    "config",
    "ha",
    "ha/standby",
    "outbox",
    "declined",
    "console",
    "log",
    "malformed",
    "instructions",
)
MARKERS = ("config", "ha", "outbox")
PROBE_BYTES = 4096


class DataDirError(Exception):
    """A fault of the data directory, as one sentence naming the cause and the fix."""


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def user_name() -> str:
    return _name_of(os.geteuid())


def _paths(datadir: Path) -> Iterator[Path]:
    """The data directory, then each written directory followed by its files."""
    yield datadir
    for rel in WRITTEN_DIRS:
        directory = datadir / rel
        if not directory.is_dir():
            continue
        yield directory
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue  # unreadable: the directory's own check names it
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                yield Path(entry.path)


def _access_problem(path: Path, datadir: Path) -> str | None:
    is_dir = path.is_dir()
    mode = os.W_OK | (os.X_OK | os.R_OK if is_dir else os.R_OK)
    if os.access(path, mode):
        return None
    st = path.stat()
    user = user_name()
    what = "writable" if not os.access(path, os.W_OK) else "readable"
    if st.st_uid != os.geteuid():
        return (
            f"{path} is owned by {_name_of(st.st_uid)} and not {what} by user {user}; "
            f"run: sudo chown -R {user} {datadir}"
        )
    return (
        f"{path} is not {what} by its owner {user} (mode {st.st_mode & 0o7777:04o}); "
        f"run: chmod -R u+rwX {datadir}"
    )


def free_bytes(datadir: Path) -> int:
    st = os.statvfs(datadir)
    return st.f_bavail * st.f_frsize


def _read_only(datadir: Path) -> bool:
    try:
        return bool(os.statvfs(datadir).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _probe(datadir: Path) -> None:
    """Write, fsync and remove a small file: the only sure test of permission and space."""
    probe = datadir / f".write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


def writable_problem(datadir: Path) -> str | None:
    """None if an instance can write everything it will write in `datadir` (creating the
    directory when missing), else the sentence that says what is wrong and how to fix it."""
    if datadir.exists() and not datadir.is_dir():
        return f"{datadir} is not a directory; point --datadirpath at a directory"
    try:
        datadir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (
            f"cannot create the data directory {datadir} ({exc.strerror}); create it and give "
            f"user {user_name()} write access: sudo mkdir -p {datadir} && "
            f"sudo chown {user_name()} {datadir}"
        )
    if _read_only(datadir):
        return f"the data directory {datadir} is on a read-only filesystem; remount it read-write"
    for path in _paths(datadir):
        try:
            problem = _access_problem(path, datadir)
        except OSError:
            continue  # removed meanwhile
        if problem:
            return problem
    try:
        _probe(datadir)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return (
                f"the disk of {datadir} is full ({free_bytes(datadir)} bytes free); "
                "free space, then start again"
            )
        return (
            f"the data directory {datadir} is not writable ({exc.strerror}); "
            f"give user {user_name()} write access: sudo chown -R {user_name()} {datadir}"
        )
    return None


def root_warning(datadir: Path) -> str | None:
    """When running as root: files created now will be root's, which the service user cannot use."""
    if os.geteuid() != 0:
        return None
    try:
        owner = _name_of(datadir.stat().st_uid)
    except OSError:
        owner = "root"
    fix = (
        f"run it as {owner} (sudo -u {owner} datonis-edge ...)"
        if owner != "root"
        else "run it as the service user, and chown -R that user the data directory"
    )
    return (
        f"running as root: files created in {datadir} now will be owned by root and a "
        f"gateway running as another user will not be able to open them; {fix}"
    )


def not_a_datadir(datadir: Path) -> str | None:
    """None if `datadir` looks like a data directory, else why not (for read-only commands)."""
    if not datadir.exists():
        why = "it does not exist"
    elif not datadir.is_dir():
        why = "it is not a directory"
    elif not any((datadir / m).is_dir() for m in MARKERS):
        why = f"it has none of {', '.join(m + '/' for m in MARKERS)}"
    else:
        return None
    return f"{datadir} is not a datonis-edge data directory ({why}); check --datadirpath"


def import_config(datadir: Path, source: Path | None) -> Config:
    """Validate `source` and copy it to <datadir>/config/edge.yaml; load what is there.

    A different config replaces the stored one (kept as edge.yaml.bak) only when no master
    runs: a live master keeps running the old one, so replacing it under it would lie.
    Raises ConfigError (the config's own problems) or DataDirError."""
    target = datadir / "config" / "edge.yaml"
    if source is None:
        if not target.exists():
            raise DataDirError(
                f"no configuration in {target}; start once with --config FILE to import one "
                "(see docs/configuration.md)"
            )
        return load_config(target)
    config = load_config(source)
    text = source.read_bytes()
    old = target.read_bytes() if target.exists() else None
    if old != text:
        _store_config(datadir, source, target, old, text)
    return config


def _store_config(
    datadir: Path, source: Path, target: Path, old: bytes | None, text: bytes
) -> None:
    from .ha.liveness import master_view
    from .store.durable import write_durably

    backup = target.with_suffix(".yaml.bak")
    if old is not None:
        master = master_view(datadir)
        if master.occupied:
            raise DataDirError(
                f"{datadir} already has a configuration that differs from {source}, and "
                f"{master.name} is master running it; to change the configuration stop every "
                "instance and start one with --config, or edit it in the console"
            )
        write_durably(backup, old)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_durably(target, text)
    if old is None:
        log.info("imported %s into %s", source, target)
    else:
        log.info(
            "imported %s into %s, replacing a different configuration (kept as %s)",
            source,
            target,
            backup.name,
        )
