"""Where each agent was read up to, kept in the data directory, so that a gateway restart or
a failover to the standby goes on from there instead of from /current.

`DIR/mtconnect/<service>/<agent>.json` = {"instance_id": ..., "next_sequence": ...}, written
(temp file, rename) after the readings of a read are durable. It is not fsync'ed: after a
power loss it may be a little behind, which re-delivers those observations rather than
losing any. A file that cannot be read is ignored (the agent is read from /current).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Positions:
    def __init__(self, workdir: Path | None, service: str) -> None:
        self.dir = (
            workdir / "mtconnect" / (_UNSAFE.sub("_", service) or "service") if workdir else None
        )

    def _path(self, agent: str) -> Path | None:
        return self.dir / f"{_UNSAFE.sub('_', agent)}.json" if self.dir else None

    def load(self, agent: str) -> tuple[str, int] | None:
        path = self._path(agent)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text())
            return str(data["instance_id"]), int(data["next_sequence"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, agent: str, instance_id: str, next_sequence: int) -> None:
        path = self._path(agent)
        if path is None:
            return
        with contextlib.suppress(OSError):  # a full disk shows in the outbox first
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"instance_id": instance_id, "next_sequence": next_sequence}))
            os.replace(tmp, path)
