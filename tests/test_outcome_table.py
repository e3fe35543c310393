"""DESIGN.md's outcome table, status by status, as the Datonis HTTP uplink maps it."""

from __future__ import annotations

import pytest

from datonis_edge.model import OutcomeKind
from datonis_edge.uplinks.datonis_http.uplink import outcome_for, parse_retry_after


@pytest.mark.parametrize(
    ("status", "kind", "keys_suspect"),
    [
        (200, OutcomeKind.DELIVERED, False),
        (202, OutcomeKind.DELIVERED, False),
        (401, OutcomeKind.DECLINED, True),
        (400, OutcomeKind.DECLINED, False),
        (422, OutcomeKind.DECLINED, False),
        (429, OutcomeKind.RETRY, False),
        (503, OutcomeKind.RETRY, False),
        (504, OutcomeKind.RETRY, False),
        (408, OutcomeKind.RETRY, False),
        (500, OutcomeKind.RETRY, False),
        (502, OutcomeKind.RETRY, False),
    ],
)
def test_status_maps_to_outcome(status: int, kind: OutcomeKind, keys_suspect: bool) -> None:
    outcome = outcome_for(status, '{"reason": "because"}', None)
    assert outcome.kind is kind
    assert outcome.keys_suspect is keys_suspect
    if kind is not OutcomeKind.DELIVERED:
        assert outcome.reason.startswith(str(status)) and "because" in outcome.reason


def test_retry_after_is_honoured_and_defaults_to_60_s() -> None:
    assert outcome_for(429, "", "7").retry_after_s == 7
    assert outcome_for(503, "", "0").retry_after_s == 0
    assert outcome_for(503, "", None).retry_after_s == 60
    assert outcome_for(500, "", "7").retry_after_s is None  # backoff, not Retry-After
    assert 0 <= (parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") or 0) < 1
