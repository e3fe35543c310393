"""Readings acknowledged and then missing: found by comparing the outbox with the heartbeat.

The supervisor writes the outbox's committed counters into `ha/master.json` every heartbeat
(1 s), outside the database. At takeover, if the outbox holds fewer `accepted` readings than
the last heartbeat said, acknowledged readings are missing — a WAL whose last commits did not
reach the disk (a write cache that lied, NFS without sync), or a file that was deleted. That
is reported and counted (accepted and lost), never hidden. Loss after the last heartbeat
cannot be seen this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .counters import NAMES, pending_of
from .salvage import SalvageReport


@dataclass
class Missing:
    deltas: dict[str, int]  # what to add to the outbox's counters
    message: str


def missing(
    found: dict[str, int],
    heartbeat: dict[str, Any] | None,
    salvaged: SalvageReport | None,
    created: bool,
    path: Path,
) -> Missing | None:
    """What the outbox as opened (`found`) lacks against the last heartbeat's counters."""
    prev = {k: v for k, v in (heartbeat or {}).items() if k in NAMES and type(v) is int}
    if not prev:
        return None
    if salvaged is not None and salvaged.counters is None:
        # the damaged file's counters were unreadable: the heartbeat's are the best known
        lost = max(pending_of(prev) - salvaged.salvaged, 0)
        target = {**found, **prev, "lost": prev.get("lost", 0) + lost}
        target["accepted"] = max(target["accepted"], found.get("accepted", 0))
        return Missing(
            {k: target[k] - found.get(k, 0) for k in target},
            f"about {lost} readings lost with the damaged outbox (from the last heartbeat's "
            "counters; readings accepted after that heartbeat are not known)",
        )
    gap = prev.get("accepted", 0) - found.get("accepted", 0)
    if gap <= 0:
        return None
    if created and salvaged is None:
        message = (
            f"{gap} readings acknowledged before the last stop are missing: {path} was not "
            "there at start (deleted or moved?)"
        )
    else:
        message = (
            f"{gap} readings acknowledged before the crash are missing from the outbox (torn "
            "write at the end of the WAL; check the storage's write cache / NFS sync options)"
        )
    return Missing({"accepted": gap, "lost": gap}, message)
