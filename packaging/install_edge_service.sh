#!/usr/bin/env bash
# install_edge_service.sh — install datonis-edge from this release bundle as a systemd service.
#
#   sudo ./install_edge_service.sh [--datadirpath DIR] [--http-port N] [--user U]
#                                  [--config FILE] [--no-start]
#
# Installs into a versioned venv /opt/datonis-edge/<version> (from the wheels in this bundle: no
# network needed), points /opt/datonis-edge/current at it, creates the service user, writes
# /etc/systemd/system/datonis-edge.service whose ExecStart carries --datadirpath, and enables and
# starts it where systemd runs. Point --datadirpath at a shared directory on every node: that
# is all failover needs. Safe to run again.
#
# Every file under the data directory must belong to the service user: root-owned ones (a
# `sudo datonis-edge run` leaves them) are given to it, after asking on a terminal. A --config
# that differs from the one in the data directory is refused while a master runs it.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
datadir=/opt/datonis-edge-data
http_port=8080
user=datonis
config=""
start=1
prefix=${DATONIS_EDGE_PREFIX:-/opt/datonis-edge}
unit_dir=${DATONIS_EDGE_UNIT_DIR:-/etc/systemd/system}

say() { echo "install_edge_service: $*"; }
die() { echo "install_edge_service: error: $*" >&2; exit 1; }
[ -f "$here/edge_lib.sh" ] || die "this script must run from an unpacked release bundle (edge_lib.sh is missing beside it)"
. "$here/edge_lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --datadirpath) datadir=${2:?--datadirpath needs a directory}; shift 2 ;;
        --http-port) http_port=${2:?--http-port needs a number}; shift 2 ;;
        --user) user=${2:?--user needs a name}; shift 2 ;;
        --config) config=${2:?--config needs a file}; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'; see --help" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run it as root (sudo $0 ...): it creates a user, a venv under $prefix and a systemd unit"
[[ "$http_port" =~ ^[0-9]+$ ]] && [ "$http_port" -ge 1 ] && [ "$http_port" -le 65535 ] || die "--http-port '$http_port' is not a port number (1-65535)"
case "$datadir" in /*) ;; *) die "--datadirpath must be an absolute path (got '$datadir')" ;; esac
command -v python3 >/dev/null || die "python3 is not installed; on Debian 12: apt-get install python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 $(python3 -V 2>&1) is too old; datonis-edge needs 3.11 or newer (Debian 12 has it)"
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3's venv module is missing; on Debian 12: apt-get install python3-venv"
version=$(cat "$here/VERSION" 2>/dev/null) || die "this script must run from an unpacked release bundle (no VERSION file beside it)"
ls "$here"/wheels/datonis_edge-"$version"-*.whl >/dev/null 2>&1 || die "the bundle has no wheel of datonis-edge $version in $here/wheels"

systemd_runs=0
[ -d /run/systemd/system ] && systemd_runs=1

# a port in use is a clear error, unless it is our own running service (re-install)
if ! { [ $systemd_runs = 1 ] && systemctl is-active --quiet datonis-edge 2>/dev/null; }; then
    python3 - "$http_port" <<'PY' || die "port $http_port is already in use; stop what uses it or choose another with --http-port"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
fi

if id "$user" >/dev/null 2>&1; then
    say "user $user exists"
else
    say "creating system user $user"
    useradd --system --user-group --home-dir "$datadir" --no-create-home --shell /usr/sbin/nologin "$user"
fi

if [ ! -d "$datadir" ]; then
    say "creating data directory $datadir"
    mkdir -p "$datadir"
    chown "$user:$user" "$datadir"
fi
# the whole tree, not only its top: one `sudo datonis-edge run` leaves root-owned files inside
give_tree_to "$user" "$datadir"
check_writable "$user" "$datadir"

target="$prefix/$version"
say "installing datonis-edge $version into $target (offline, from the bundle's wheels)"
mkdir -p "$prefix"
install_version "$target" "$version" "$here/wheels"
stored="$datadir/config/edge.yaml"
if [ -n "$config" ]; then
    "$target/bin/datonis-edge" config validate "$config" || die "the config $config is not valid (see above); nothing was changed in $datadir"
    # a live master keeps running the stored config: replacing it under it would lie
    if [ -f "$stored" ] && ! cmp -s "$config" "$stored" \
        && master=$("$target/bin/datonis-edge" status --datadirpath "$datadir" 2>/dev/null); then
        master=$(echo "$master" | sed -n 's/^master: *\([^,]*\).*/\1/p')
        die "$datadir already has a configuration that differs from $config, and $master is master running it; to change the configuration stop every instance and install with --config again, or edit it in the console"
    fi
fi
switch_current "$prefix" "$target"
mkdir -p "$prefix/current/docs" && cp -r "$here"/docs/. "$prefix/current/docs/" 2>/dev/null || true
say "$prefix/current -> $target"

if [ -n "$config" ]; then
    if [ -f "$stored" ] && ! cmp -s "$config" "$stored"; then
        install -m 0640 -o "$user" -g "$user" "$stored" "$stored.bak"
        say "keeping the previous $stored as edge.yaml.bak"
    fi
    install -d -o "$user" -g "$user" "$datadir/config"
    install -m 0640 -o "$user" -g "$user" "$config" "$stored"
    say "imported $config into $stored"
fi

unit="$unit_dir/datonis-edge.service"
say "writing $unit (ExecStart ... --datadirpath $datadir --http-port $http_port)"
mkdir -p "$unit_dir"
sed -e "s#@DATADIR@#$datadir#g" -e "s#@HTTP_PORT@#$http_port#g" -e "s#@USER@#$user#g" \
    "$here/datonis-edge.service" > "$unit.new"
mv "$unit.new" "$unit"

if [ $systemd_runs = 1 ]; then
    systemctl daemon-reload
    systemctl enable datonis-edge.service >/dev/null
    if [ $start = 1 ]; then
        say "starting datonis-edge"
        systemctl restart datonis-edge.service
        say "done: systemctl status datonis-edge; console on http://$(hostname):$http_port/"
    else
        say "done (not started: --no-start); start it with systemctl start datonis-edge"
    fi
else
    say "systemd is not running here: the unit is written but not enabled; start the gateway with"
    say "  $(sed -n 's/^ExecStart=//p' "$unit")"
fi
if [ ! -f "$datadir/config/edge.yaml" ]; then
    say "note: $datadir has no configuration yet; import one with --config FILE (see docs/configuration.md)"
fi
