"""The two installation stories, for real: the Docker image (built with podman) in failover
mode on a bind-mounted data directory, its upgrade, and the classic install from the release
bundle inside a Debian container with no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import PlatformSim, api_token, base_config, free_port, simulator_service, wait_until

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT.parent / "shared" / "tools"
VERSION = "0.1.0"


def _container_env() -> dict[str, str]:
    out = subprocess.run(
        [str(TOOLS / "container-env")], capture_output=True, text=True, check=True
    ).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip("'\"")
    return env


@pytest.fixture(scope="session")
def podman() -> dict[str, str]:
    if not (TOOLS / "container-env").exists():
        pytest.fail("../shared/tools/container-env is missing: the packaging tests need it")
    return _container_env()


def run(
    args: list[str], env: dict[str, str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def image(podman: dict[str, str]) -> str:
    """`make image`, then a second tag B built from the same Dockerfile with another version."""
    run(["make", "-C", str(ROOT), "image"], os.environ.copy(), timeout=1800)
    run(
        [
            "podman",
            "build",
            "--pull=never",
            "--format",
            "docker",
            "-q",
            "-f",
            "packaging/Dockerfile",
            "--build-arg",
            "VERSION=0.1.1-test",
            "-t",
            "datonis-edge:0.1.1-test",
            str(ROOT),
        ],
        podman,
        timeout=1800,
    )
    return f"datonis-edge:{VERSION}"


class Container:
    def __init__(
        self, podman: dict[str, str], image: str, datadir: Path, http_port: int, name: str
    ) -> None:
        self.env, self.image, self.datadir, self.http_port = podman, image, datadir, http_port
        self.name = f"dte-{name}-{http_port}"
        token = api_token(datadir, f"tests-{name}")
        for p in [datadir / "console", *(datadir / "console").iterdir()]:
            os.chown(p, 10001, 10001)  # the image's non-root user reads the token hashes
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{http_port}",
            timeout=3,
            headers={"Authorization": f"Bearer {token}"},
        )

    def start(self) -> Container:
        run(
            [
                "podman",
                "run",
                "-d",
                "--name",
                self.name,
                "--network",
                "host",
                "--mount",
                f"type=bind,source={self.datadir},target=/opt/datonis-edge-data",
                "-e",
                f"DATONIS_EDGE_HTTP_PORT={self.http_port}",
                self.image,
            ],
            self.env,
        )
        return self

    def status(self) -> dict:
        return self.http.get("/api/v1/status").json()

    def role(self) -> str | None:
        try:
            return self.status()["role"]
        except (httpx.HTTPError, ValueError):
            return None

    def logs(self) -> str:
        return run(["podman", "logs", self.name], self.env, check=False).stdout

    def remove(self) -> None:
        run(["podman", "rm", "-f", "-t", "0", self.name], self.env, check=False)
        self.http.close()


def _shared_datadir(tmp_path: Path, config: dict) -> Path:
    datadir = tmp_path / "shared-vol" / "datonis-edge-data"
    (datadir / "config").mkdir(parents=True)
    (datadir / "config" / "edge.yaml").write_text(yaml.safe_dump(config))
    for p in [datadir, datadir / "config", datadir / "config" / "edge.yaml"]:
        os.chown(p, 10001, 10001)  # the image's non-root user
    return datadir


def test_two_containers_on_one_data_directory_fail_over(
    image, podman, platform, tmp_path: Path
) -> None:
    config = base_config(platform)
    config["services"] = [simulator_service("press-1", scan_interval_ms=100)]
    datadir = _shared_datadir(tmp_path, config)
    a = Container(podman, image, datadir, free_port(), "a").start()
    b = Container(podman, image, datadir, free_port(), "b")
    c = Container(podman, image, datadir, free_port(), "c")
    try:
        wait_until(lambda: a.role() == "master", 60, "container a master")
        b.start()
        wait_until(lambda: b.role() == "standby", 60, "container b standby")
        assert b.http.get("/readyz").status_code == 503 and a.http.get("/readyz").status_code == 200
        wait_until(lambda: len(platform.events()) > 3, 30, "delivery from the container")
        epoch = a.status()["epoch"]

        run(["podman", "kill", a.name], podman)  # SIGKILL
        t = time.monotonic()
        wait_until(lambda: b.role() == "master", 10, "b master")
        assert time.monotonic() - t < 2.0
        wait_until(
            lambda: any(e["epoch"] == epoch + 1 for e in platform.events()), 30, "b delivers"
        )

        c.start()
        wait_until(lambda: c.role() == "standby", 60, "container c standby")
        run(["podman", "stop", "-t", "20", b.name], podman)  # SIGTERM: a clean hand-over
        assert (
            run(
                ["podman", "inspect", "--format", "{{.State.ExitCode}}", b.name], podman
            ).stdout.strip()
            == "0"
        )
        wait_until(lambda: c.role() == "master", 5, "c master after the clean stop")
        wait_until(
            lambda: any(e["epoch"] == epoch + 2 for e in platform.events()), 30, "c delivers"
        )
    finally:
        for x in (a, b, c):
            x.remove()


def test_upgrade_is_a_new_image_on_the_same_mount(image, podman, tmp_path: Path) -> None:
    sim_port = free_port()
    sim = PlatformSim(tmp_path, "good-ak", "good-sk", port=sim_port)
    listener = free_port()
    config = base_config(sim, bulk_max_elements=10)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": listener}
    ]
    datadir = _shared_datadir(tmp_path, config)
    url = f"http://127.0.0.1:{listener}/api/v3/things/event.json"

    def post(start: int) -> None:
        events = [
            {"thing_key": "m", "timestamp": i, "data": {"seq": i}} for i in range(start, start + 10)
        ]
        assert httpx.post(url, json={"events": events}, timeout=10).status_code == 200

    a = Container(podman, image, datadir, free_port(), "upg-a").start()
    b = Container(podman, "datonis-edge:0.1.1-test", datadir, free_port(), "upg-b")
    try:
        wait_until(lambda: a.role() == "master", 60, "image A master")
        sim.start()
        sim.set_keys("rotated", "keys")  # a 401: this batch is declined
        post(0)
        wait_until(lambda: a.status()["declined_batches"] == 1, 30, "declined")
        sim.stop()  # an outage: the next batch stays pending
        post(10)
        wait_until(lambda: a.status()["outbox"]["pending"] == 10, 30, "pending in the outbox")
        run(["podman", "stop", "-t", "20", a.name], podman)

        b.start()
        wait_until(lambda: b.role() == "master", 60, "image B master")
        labels = run(
            [
                "podman",
                "inspect",
                "--format",
                '{{index .Config.Labels "org.opencontainers.image.version"}}',
                b.name,
            ],
            podman,
        ).stdout
        assert labels.strip() == "0.1.1-test"
        assert b.status()["outbox"]["pending"] == 10
        assert b.status()["declined_batches"] == 1
        assert (datadir / "config" / "edge.yaml").read_text() == yaml.safe_dump(config)
        sim2 = PlatformSim(tmp_path, "good-ak", "good-sk", port=sim_port).start()
        try:
            wait_until(
                lambda: sorted(e["data"]["seq"] for e in sim2.events()) == list(range(10, 20)),
                60,
                "pending delivered by B",
            )
        finally:
            sim2.stop()
    finally:
        a.remove()
        b.remove()


def _newer_bundle(tmp_path: Path, bundle: Path, version: str) -> Path:
    """A copy of the bundle whose datonis-edge wheel carries a newer version."""
    src = tmp_path / "src-newer"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", "dist", "build", ".git", "*.egg-info", "__pycache__"
        ),
    )
    pyproject = src / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(f'version = "{VERSION}"', f'version = "{version}"')
    )
    newer = tmp_path / f"datonis-edge-{version}"
    shutil.copytree(bundle, newer)
    for whl in (newer / "wheels").glob("datonis_edge-*.whl"):
        whl.unlink()
    pip = Path(os.sys.executable).parent / "pip"
    subprocess.run(
        [str(pip), "wheel", "-q", "--no-deps", "-w", str(newer / "wheels"), str(src)],
        check=True,
        timeout=300,
    )
    (newer / "VERSION").write_text(version + "\n")
    return newer


@pytest.fixture(scope="module")
def classic_node(podman, tmp_path_factory) -> Path:
    """The release bundle and a newer one (0.1.1) unpacked in a work dir, the Debian image built,
    and edge.yaml: what a Debian node with no network gets."""
    run(["make", "-C", str(ROOT), "dist"], os.environ.copy(), timeout=900)
    run(
        [
            "podman",
            "build",
            "--pull=never",
            "-q",
            "-f",
            str(ROOT / "tests/containers/classic-install.Dockerfile"),
            "-t",
            "dte-debian-node",
            str(ROOT / "tests/containers"),
        ],
        podman,
        timeout=1800,
    )
    tmp_path = tmp_path_factory.mktemp("classic")
    work = tmp_path / "node"
    work.mkdir()
    with tarfile.open(ROOT / "dist" / f"datonis-edge-{VERSION}.tar.gz") as tar:
        tar.extractall(work, filter="data")
    newer = _newer_bundle(tmp_path, work / f"datonis-edge-{VERSION}", "0.1.1")
    shutil.copytree(newer, work / "datonis-edge-0.1.1")
    config = base_config(None)
    config["services"] = [simulator_service("k", scan_interval_ms=1000, name="sim")]
    (work / "edge.yaml").write_text(yaml.safe_dump(config))
    return work


def _on_debian_node(podman, work: Path, shared: Path, script: str, name: str):
    (work / f"{name}.sh").write_text(script)
    shared.mkdir()
    return run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{work}:/work",
            "-v",
            f"{shared}:/shared",
            "dte-debian-node",
            "bash",
            f"/work/{name}.sh",
        ],
        podman,
        timeout=900,
        check=False,
    )


# waits for /readyz of the gateway on PORT (shell function for the node scripts)
READY = """ready() {{ python3 -c "import urllib.request,sys,time
for _ in range(100):
    try:
        urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=1); sys.exit(0)
    except OSError: time.sleep(0.2)
sys.exit(1)"; }}"""


def test_classic_install_and_upgrade_offline_in_a_debian_container(
    podman, classic_node: Path, tmp_path: Path
) -> None:
    work = classic_node
    port = free_port()
    script = f"""
set -e
cd /work
trap 'echo "failed at line $LINENO"; tail -n 15 /work/*.log' ERR
bad=$(su -s /bin/sh nobody -c './datonis-edge-{VERSION}/install_edge_service.sh' 2>&1 || true)
echo "$bad" | grep -q 'run it as root'
./datonis-edge-{VERSION}/install_edge_service.sh --datadirpath /shared --http-port {port} --config /work/edge.yaml --no-start
./datonis-edge-{VERSION}/install_edge_service.sh --datadirpath /shared --http-port {port} --no-start   # idempotent
grep -q -- '--datadirpath /shared --http-port {port}' /etc/systemd/system/datonis-edge.service
systemd-analyze verify /etc/systemd/system/datonis-edge.service
exec_start=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/datonis-edge.service)
{READY.format(port=port)}
setpriv --reuid=datonis --regid=datonis --init-groups $exec_start > /work/run1.log 2>&1 &
pid=$!
ready
kill -TERM $pid; wait $pid || true
test -f /shared/outbox/outbox.db && test -f /shared/ha/epoch
./datonis-edge-0.1.1/upgrade_edge_service.sh --no-restart
readlink /opt/datonis-edge/current | grep -q 0.1.1
/opt/datonis-edge/current/bin/datonis-edge version | grep -q 0.1.1
setpriv --reuid=datonis --regid=datonis --init-groups $exec_start > /work/run2.log 2>&1 &
pid=$!
ready
kill -TERM $pid; wait $pid || true
# one `sudo datonis-edge run` leaves root-owned files; installing again gives them back
$exec_start > /work/run-as-root.log 2>&1 &
pid=$!
ready
kill -TERM $pid; wait $pid || true
grep -q 'running as root: files created in /shared' /work/run-as-root.log
test -n "$(find /shared ! -user datonis)"
./datonis-edge-0.1.1/install_edge_service.sh --datadirpath /shared --http-port {port} --no-start < /dev/null > /work/reinstall.log
grep -q 'under /shared are owned by root, not by datonis' /work/reinstall.log
test -z "$(find /shared ! -user datonis)"
cat /shared/ha/epoch
echo CLASSIC-INSTALL-OK
"""
    proc = _on_debian_node(podman, work, tmp_path / "shared", script, "install")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "CLASSIC-INSTALL-OK" in proc.stdout
    # three starts, three epochs: the data directory survived
    assert proc.stdout.strip().splitlines()[-2] == "3"
    assert (tmp_path / "shared" / "config" / "edge.yaml").exists()


def test_upgrade_with_datadirpath_moves_a_single_install_into_a_shared_directory(
    podman, classic_node: Path, tmp_path: Path
) -> None:
    work = classic_node
    port = free_port()
    unit = "/etc/systemd/system/datonis-edge.service"
    script = f"""
set -e
cd /work
trap 'echo "failed at line $LINENO"; tail -n 15 /work/*.log' ERR
./datonis-edge-{VERSION}/install_edge_service.sh --http-port {port} --config /work/edge.yaml --no-start
grep -q -- '--datadirpath /opt/datonis-edge-data --http-port {port}' {unit}
{READY.format(port=port)}
start() {{
    setpriv --reuid=datonis --regid=datonis --init-groups $(sed -n 's/^ExecStart=//p' {unit}) > /work/$1.log 2>&1 &
    pid=$!
    ready
    kill -TERM $pid; wait $pid || true
}}
start single
test -f /opt/datonis-edge-data/outbox/outbox.db && test "$(cat /opt/datonis-edge-data/ha/epoch)" = 1

# refused: the shared directory already holds data (another gateway's)
mkdir -p /shared/outbox /shared/config && echo other > /shared/config/edge.yaml && echo x > /shared/outbox/outbox.db
if ./datonis-edge-0.1.1/upgrade_edge_service.sh --datadirpath /shared --no-restart > /work/refused.log 2>&1; then
    echo "the upgrade should have been refused"; exit 1
fi
cat /work/refused.log
grep -q 'both the current data directory /opt/datonis-edge-data (config/ .*ha/ outbox/.*) and /shared (config/ outbox/) hold data' /work/refused.log
grep -q 'nothing was changed' /work/refused.log
grep -q -- '--datadirpath /opt/datonis-edge-data --http-port' {unit}
test "$(cat /shared/config/edge.yaml)" = other && cmp /work/edge.yaml /opt/datonis-edge-data/config/edge.yaml
readlink /opt/datonis-edge/current | grep -q {VERSION}
rm -rf /shared/outbox /shared/config

./datonis-edge-0.1.1/upgrade_edge_service.sh --datadirpath /shared --no-restart
grep -q -- '--datadirpath /shared --http-port {port}' {unit}
grep -qx 'RequiresMountsFor=/shared' {unit}
systemd-analyze verify {unit}
readlink /opt/datonis-edge/current | grep -q 0.1.1
test -z "$(ls -A /opt/datonis-edge-data)"
test -f /shared/outbox/outbox.db && cmp /work/edge.yaml /shared/config/edge.yaml
test -z "$(find /shared ! -user datonis)" && test ! -e /shared/.moved-from
start shared
/opt/datonis-edge/current/bin/datonis-edge status --datadirpath /shared || echo "status: $?"
cat /shared/ha/epoch
echo MOVE-OK
"""
    proc = _on_debian_node(podman, work, tmp_path / "shared", script, "move")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "MOVE-OK" in proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "2"  # the second start continued the moved epoch
    assert lines[-3] == "status: 1"  # stopped: no live master, and status says so
