#!/usr/bin/env bash
# upgrade_edge_service.sh — upgrade an installed datonis-edge to the version of this bundle.
#
#   sudo ./upgrade_edge_service.sh [--datadirpath DIR] [--no-restart] [--health-timeout SECONDS]
#
# Installs the new version beside the old one (/opt/datonis-edge/<version>), switches
# /opt/datonis-edge/current over, restarts the service and waits for /healthz; if the new
# version does not become healthy it switches back to the old one and restarts that. Safe to
# run again. Upgrade the standbys first, the master last: each restart is a clean hand-over.
#
# The data directory is not touched, unless --datadirpath DIR names another one: then the
# service is stopped, its data (configuration, outbox, declined batches, ...) is moved into
# DIR and the service is pointed there. That is how a single install joins failover mode: give
# every node the same shared DIR. When DIR already holds data (another node moved its data
# there first), a node whose own directory holds no data just points there; one whose own
# directory holds data too is refused, since two outboxes cannot be merged.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
prefix=${DATONIS_EDGE_PREFIX:-/opt/datonis-edge}
unit=${DATONIS_EDGE_UNIT_DIR:-/etc/systemd/system}/datonis-edge.service
restart=1
health_timeout=60
new_datadir=""

say() { echo "upgrade_edge_service: $*"; }
die() { echo "upgrade_edge_service: error: $*" >&2; exit 1; }
[ -f "$here/edge_lib.sh" ] || die "this script must run from an unpacked release bundle (edge_lib.sh is missing beside it)"
. "$here/edge_lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --datadirpath) new_datadir=${2:?--datadirpath needs a directory}; shift 2 ;;
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
datadir=$(sed -n 's/^ExecStart=.*--datadirpath \([^ ]*\).*/\1/p' "$unit")
user=$(sed -n 's/^User=//p' "$unit")
user=${user:-datonis}
systemd_runs=0
[ -d /run/systemd/system ] && systemd_runs=1

if [ -n "$datadir" ] && [ -f "$datadir/.moved-from" ]; then
    # a move that was interrupted after the unit was pointed here: finish it
    say "finishing an interrupted move: emptying $(cat "$datadir/.moved-from"), whose data is in $datadir"
    forget_datadir "$(cat "$datadir/.moved-from")" "$datadir"
fi
if [ -n "$new_datadir" ]; then
    new_datadir=${new_datadir%/}
    case "$new_datadir" in /?*) ;; *) die "--datadirpath must be an absolute path (got '$new_datadir')" ;; esac
    [[ "$new_datadir" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "--datadirpath '$new_datadir' has characters a unit file cannot carry; use letters, digits and . _ - + /"
    [ -n "$datadir" ] || die "$unit has no --datadirpath in its ExecStart; reinstall with install_edge_service.sh --datadirpath $new_datadir"
    [ "$new_datadir" = "$datadir" ] && new_datadir=""
fi
if [ -n "$new_datadir" ]; then
    case "$new_datadir/" in "$datadir"/*) die "--datadirpath $new_datadir is inside the current data directory $datadir; choose a directory outside it" ;; esac
    case "$datadir/" in "$new_datadir"/*) die "the current data directory $datadir is inside --datadirpath $new_datadir; choose a directory of its own" ;; esac
    [ ! -e "$new_datadir" ] || [ -d "$new_datadir" ] || die "--datadirpath $new_datadir exists and is not a directory"
    old_data=$(datadir_entries "$datadir")
    new_data=""
    [ -d "$new_datadir" ] && new_data=$(datadir_entries "$new_datadir")
    resuming=0
    [ "$(cat "$new_datadir/.moved-from" 2>/dev/null)" = "$datadir" ] && resuming=1
    if [ -n "$old_data" ] && [ -n "$new_data" ] && [ $resuming = 0 ]; then
        die "both the current data directory $datadir ($old_data) and $new_datadir ($new_data) hold data, and two outboxes cannot be merged; deliver or remove one side's data (or choose an empty --datadirpath); nothing was changed"
    fi
    foreign=""
    [ -d "$new_datadir" ] && foreign=$(foreign_entries "$new_datadir")
    [ -z "$foreign" ] || die "$new_datadir holds files that are not a data directory's ($foreign); use a directory of its own for --datadirpath; nothing was changed"
elif [ "$old" = "$target" ]; then
    say "datonis-edge $version is already the current version"
    exit 0
fi

if [ "$old" != "$target" ]; then
    say "upgrading datonis-edge $old_version -> $version"
    install_version "$target" "$version" "$here/wheels"
    mkdir -p "$target/docs" && cp -r "$here"/docs/. "$target/docs/" 2>/dev/null || true
fi

if [ -n "$new_datadir" ]; then
    if [ $systemd_runs = 1 ] && systemctl is-active --quiet datonis-edge; then
        say "stopping datonis-edge to move its data directory"
        systemctl stop datonis-edge.service
    fi
    # nothing may write the old directory while it moves (a gateway started by hand, say)
    if running=$("$target/bin/datonis-edge" status --datadirpath "$datadir" 2>/dev/null); then
        die "a gateway still runs on $datadir ($(echo "$running" | sed -n 's/^master: *//p')); stop it, then run the upgrade again; nothing was moved"
    fi
    if [ -n "$old_data" ] || [ $resuming = 1 ]; then
        move_datadir "$datadir" "$new_datadir"
    else
        say "$datadir holds no data: pointing the service at $new_datadir (${new_data:-empty})"
        mkdir -p "$new_datadir"
    fi
    give_tree_to "$user" "$new_datadir"
    check_writable "$user" "$new_datadir"
    old_re=$(printf '%s' "$datadir" | sed 's/[.[\*^$#]/\\&/g')
    sed -e "s#^\(ExecStart=.*--datadirpath \)$old_re\( \|\$\)#\1$new_datadir\2#" \
        -e "s#^RequiresMountsFor=$old_re\$#RequiresMountsFor=$new_datadir#" "$unit" > "$unit.new"
    grep -q -- "--datadirpath $new_datadir" "$unit.new" || { rm -f "$unit.new"; die "could not point $unit at $new_datadir (its ExecStart line is not the installed one); edit it by hand"; }
    mv "$unit.new" "$unit"
    [ $systemd_runs = 0 ] || systemctl daemon-reload
    if [ -n "$old_data" ] || [ $resuming = 1 ]; then
        forget_datadir "$datadir" "$new_datadir"
    fi
    say "the service now uses $new_datadir${old_data:+ (moved there from $datadir: $old_data)}"
fi

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

if [ "$old" != "$target" ]; then
    switch_current "$prefix" "$target"
    say "$prefix/current -> $target"
fi
if [ $restart = 0 ] || [ $systemd_runs = 0 ]; then
    if [ "$old" = "$target" ]; then
        say "not restarting (--no-restart or no systemd): start the gateway to run it on $new_datadir"
    else
        say "not restarting (--no-restart or no systemd): restart the gateway to run $version; $old_version stays in $old for a rollback"
    fi
    exit 0
fi
systemctl daemon-reload
systemctl restart datonis-edge.service
if healthy; then
    say "datonis-edge $version is healthy on port $http_port; $old_version kept in $old (remove it when satisfied)"
elif [ "$old" = "$target" ]; then
    die "datonis-edge did not become healthy within ${health_timeout}s on $new_datadir; see journalctl -u datonis-edge"
else
    say "datonis-edge $version did not become healthy within ${health_timeout}s: rolling back to $old_version"
    switch_current "$prefix" "$old"
    systemctl restart datonis-edge.service
    healthy || die "the rollback to $old_version is not healthy either; see journalctl -u datonis-edge"
    die "upgrade failed and was rolled back to $old_version; see journalctl -u datonis-edge"
fi
