"""A data directory the service user cannot write: one `sudo datonis-edge run` leaves root-owned
files behind; a full or read-only disk. One sentence with the path and the fix, exit 2.

The unprivileged user is `nobody` (uid 65534), through setpriv. When the venv's interpreter
lives where `nobody` cannot reach it (a pyenv under /root), the process keeps only
CAP_DAC_READ_SEARCH: it can read and search anything, but writes are still checked by uid,
and access(2) ignores capabilities, so what is tested is exactly what `nobody` may write."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import EDGE, Proc, base_config, free_port, simulator_service, wait_until

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play root and nobody")


def _setpriv() -> list[str]:
    base = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    for extra in ([], ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if (
                subprocess.run(
                    [*base, *extra, EDGE, "version"], capture_output=True, timeout=60
                ).returncode
                == 0
            ):
                return [*base, *extra]
    pytest.skip("cannot run the gateway as nobody here (setpriv, or the interpreter's path)")


@pytest.fixture(scope="module")
def as_nobody() -> list[str]:
    return _setpriv()


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory `nobody` can reach (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="dte-permissions-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_args(datadir: Path, config: Path | None = None) -> list[str]:
    args = [EDGE, "run", "--datadirpath", str(datadir), "--http-port", str(free_port())]
    args += ["--http-host", "127.0.0.1"]
    return args + (["--config", str(config)] if config else [])


def _config(tmp_path: Path) -> Path:
    config = base_config(None)
    config["services"] = [simulator_service("press-1", scan_interval_ms=200)]
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid)


def _run_until_master(tmp_path: Path, args: list[str], name: str) -> str:
    gw = Proc(args, tmp_path / f"{name}.log").start()
    try:
        wait_until(lambda: "master: epoch" in gw.log() or gw.p.poll() is not None, 30, "master")
        assert "master: epoch" in gw.log(), gw.log()
    finally:
        assert gw.stop() == 0, gw.log()
    return gw.log()


def _refused(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_after_one_run_as_root_the_service_user_is_told_to_chown_and_then_runs(
    work: Path, as_nobody: list[str]
) -> None:
    datadir = work / "data"
    datadir.mkdir()
    os.chown(datadir, NOBODY, NOBODY)  # the install gave the data directory to the service user
    config = _config(work)

    root_log = _run_until_master(work, _run_args(datadir, config), "as-root")
    assert "running as root: files created in" in root_log
    assert (datadir / "ha" / "lock").stat().st_uid == 0

    error = _refused([*as_nobody, *_run_args(datadir)])
    assert error.startswith("error: " + str(datadir) + "/")
    assert (
        f"is owned by root and not writable by user nobody; run: sudo chown -R nobody {datadir}"
        in error
    )

    _chown_tree(datadir, NOBODY)  # what the message says to do
    log = _run_until_master(work, [*as_nobody, *_run_args(datadir)], "as-nobody")
    assert "running as root" not in log


def test_a_root_owned_ha_lock_is_named_with_the_chown_line(work: Path, as_nobody) -> None:
    datadir = work / "data"
    _run_until_master(work, _run_args(datadir, _config(work)), "setup")
    _chown_tree(datadir, NOBODY)
    lock = datadir / "ha" / "lock"
    os.chown(lock, 0, 0)
    lock.chmod(0o640)

    error = _refused([*as_nobody, *_run_args(datadir)])
    assert error == (
        f"error: {lock} is owned by root and not writable by user nobody; "
        f"run: sudo chown -R nobody {datadir}"
    )


def test_a_file_of_the_user_without_write_permission_is_named_with_the_chmod_line(
    work: Path, as_nobody
) -> None:
    datadir = work / "data"
    _run_until_master(work, _run_args(datadir, _config(work)), "setup")
    _chown_tree(datadir, NOBODY)
    stored = datadir / "config" / "edge.yaml"
    stored.chmod(0o440)

    error = _refused([*as_nobody, *_run_args(datadir)])
    assert error == (
        f"error: {stored} is not writable by its owner nobody (mode 0440); "
        f"run: chmod -R u+rwX {datadir}"
    )


def test_a_data_directory_nobody_may_create_says_how_to_create_it(work: Path, as_nobody) -> None:
    parent = work / "opt"
    parent.mkdir(mode=0o755)
    error = _refused([*as_nobody, *_run_args(parent / "data", _config(work))])
    assert error.startswith(f"error: cannot create the data directory {parent / 'data'} (")
    assert f"sudo mkdir -p {parent / 'data'} && sudo chown nobody {parent / 'data'}" in error


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_says_it_is_full_not_that_it_is_not_writable(
    tmp_path: Path, small_disk: Path
) -> None:
    datadir = small_disk / "data"
    datadir.mkdir()
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    error = _refused(_run_args(datadir, _config(tmp_path)))
    assert error.startswith(f"error: the disk of {datadir} is full (")
    assert error.endswith(" bytes free); free space, then start again")
    assert "not writable" not in error


def test_a_read_only_filesystem_says_so(tmp_path: Path, small_disk: Path) -> None:
    (small_disk / "data").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    error = _refused(_run_args(small_disk / "data", _config(tmp_path)))
    assert error == (
        f"error: the data directory {small_disk / 'data'} is on a read-only filesystem; "
        "remount it read-write"
    )
