"""Start ThingsBoard IoT Gateway 3.8 with nothing leaving loopback.

Run by the ThingsBoard venv's python (not the project's): `tb-venv/bin/python tb_launch.py`, with
`TB_GW_CONFIG_DIR` naming the folder of `tb_gateway.json`. Before the gateway is imported:

- its update check is switched off: 3.8.5 has no config key for it (`TBUpdater.__init__` starts
  a thread that POSTs to the vendor's update service on every start, and again every hour), so
  `TBUpdater.check_for_new_version` is replaced by a no-op;
- `TBUtility.install_package` (pip at run time, when a connector's library is missing, and the
  RPC "update") is refused;
- every socket connect and name lookup to anything but loopback is refused and printed once as
  `BLOCKED non-loopback ...` (the bench fails a run whose log holds that line).

Remote configuration, remote shell and statistics talk to "the ThingsBoard server" over the one
MQTT connection, which the bench points at its local mosquitto.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_blocked: set[str] = set()


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str, host: Any) -> None:
    if str(host) not in _blocked:
        _blocked.add(str(host))
        print(f"BLOCKED non-loopback {what} to {host}", file=sys.stderr, flush=True)


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse("connect", address[0])
        raise ConnectionRefusedError(f"bench: no connection beyond loopback ({address[0]})")
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse("connect", address[0])
        return 111  # ECONNREFUSED
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host):
        _refuse("name lookup", host)
        raise socket.gaierror(socket.EAI_NONAME, f"bench: no lookup beyond loopback ({host})")
    return _getaddrinfo(host, *args, **kwargs)


def main() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo

    from thingsboard_gateway.tb_utility import tb_updater, tb_utility

    def no_update_check(self: Any) -> None:
        return None

    def no_install(package: str, *args: Any, **kwargs: Any) -> bool:
        print(f"BLOCKED pip install of {package} at run time", file=sys.stderr, flush=True)
        return False

    tb_updater.TBUpdater.check_for_new_version = no_update_check  # type: ignore[method-assign]
    tb_updater.UPDATE_SERVICE_BASE_URL = "http://127.0.0.1:9"
    tb_utility.TBUtility.install_package = staticmethod(no_install)  # type: ignore[method-assign]

    from thingsboard_gateway.tb_gateway import daemon

    daemon()


if __name__ == "__main__":
    main()
