#!/usr/bin/env bash
# upgrade_edge_service.sh — upgrade an installed datonis-edge to the version of this bundle.
#
#   sudo ./upgrade_edge_service.sh [--no-restart] [--health-timeout SECONDS]
#
# Installs the new version beside the old one (/opt/datonis-edge/<version>), switches
# /opt/datonis-edge/current over, restarts the service and waits for /healthz; if the new
# version does not become healthy it switches back to the old one and restarts that. The data
# directory is never touched. Safe to run again. Upgrade the standbys first, the master last:
# each restart is a clean hand-over.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
prefix=${DATONIS_EDGE_PREFIX:-/opt/datonis-edge}
unit=${DATONIS_EDGE_UNIT_DIR:-/etc/systemd/system}/datonis-edge.service
restart=1
health_timeout=60

say() { echo "upgrade_edge_service: $*"; }
die() { echo "upgrade_edge_service: error: $*" >&2; exit 1; }
[ -f "$here/edge_lib.sh" ] || die "this script must run from an unpacked release bundle (edge_lib.sh is missing beside it)"
. "$here/edge_lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --no-restart) restart=0; shift ;;
        --health-timeout) health_timeout=${2:?needs seconds}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'; see --help" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run it as root (sudo $0)"
command -v python3 >/dev/null || die "python3 is not installed; on Debian 12: apt-get install python3 python3-venv"
version=$(cat "$here/VERSION" 2>/dev/null) || die "this script must run from an unpacked release bundle (no VERSION file beside it)"
[ -f "$unit" ] || die "datonis-edge is not installed here (no $unit); use install_edge_service.sh"
[ -L "$prefix/current" ] || die "no $prefix/current link; use install_edge_service.sh"
old=$(readlink -f "$prefix/current")
old_version=$(basename "$old")
target="$prefix/$version"
http_port=$(sed -n 's/^ExecStart=.*--http-port \([0-9]*\).*/\1/p' "$unit")
http_port=${http_port:-8080}

if [ "$old" = "$target" ]; then
    say "datonis-edge $version is already the current version"
    exit 0
fi
say "upgrading datonis-edge $old_version -> $version"
install_version "$target" "$version" "$here/wheels"
mkdir -p "$target/docs" && cp -r "$here"/docs/. "$target/docs/" 2>/dev/null || true

healthy() {
    python3 - "$http_port" "$health_timeout" <<'PY'
import sys, time, urllib.request
port, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
}

switch_current "$prefix" "$target"
say "$prefix/current -> $target"
if [ $restart = 0 ] || [ ! -d /run/systemd/system ]; then
    say "not restarting (--no-restart or no systemd): restart the gateway to run $version; $old_version stays in $old for a rollback"
    exit 0
fi
systemctl daemon-reload
systemctl restart datonis-edge.service
if healthy; then
    say "datonis-edge $version is healthy on port $http_port; $old_version kept in $old (remove it when satisfied)"
else
    say "datonis-edge $version did not become healthy within ${health_timeout}s: rolling back to $old_version"
    switch_current "$prefix" "$old"
    systemctl restart datonis-edge.service
    healthy || die "the rollback to $old_version is not healthy either; see journalctl -u datonis-edge"
    die "upgrade failed and was rolled back to $old_version; see journalctl -u datonis-edge"
fi
