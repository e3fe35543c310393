"""PartStatus times its state: `since` moves on every change of state, however it is made
(ok(), error(), failed() or a plain assignment), and not when the state stays."""

from __future__ import annotations

import time

from datonis_edge.status import PartStatus


def later(ms: int) -> None:
    """Until the clock in ms has moved past `ms`."""
    while int(time.time() * 1000) <= ms:
        time.sleep(0.001)


def test_since_moves_on_every_change_of_state_and_only_then() -> None:
    status = PartStatus(name="plc", type="modbus_tcp")
    born = status.since
    assert status.snapshot()["since"] == born  # in the status API, beside state
    later(born)
    status.ok()  # no state given: unchanged
    status.state = "starting"  # the same state again
    status.error("not answering", announce=False)  # the state is not changed by this call
    assert status.since == born
    status.ok("running")
    running = status.since
    assert running > born
    later(running)
    status.ok("running")
    assert status.since == running
    status.error("device plc1 not answering", "degraded", announce=False)
    assert status.since > running
    degraded = status.since
    later(degraded)
    status.state = "running"  # a part that assigns its state directly is timed too
    assert status.since > degraded
    later(status.since)
    status.failed("task died")
    assert status.state == "failed" and status.snapshot()["since"] == status.since
