"""Datonis instructions on the wire (wire spec §8): how the platform signs one, how we verify it.

An instruction reaches a thing on `Altizon/Datonis/<access_key>/thing/<thing_key>/executeInstruction`
as compact JSON whose last two keys are `access_key` then `hash`:

    {"thing_key":..,"alert_key":..,"timestamp":..,"instruction_wrapper":{"instruction":{..}},
     "access_key":"<ak>","hash":"<64 hex>"}

`hash` is the lowercase hex HMAC-SHA256 (keyed by the secret key) of the same JSON without the
two keys. Verification (§8.3 DECISION): first the raw-prefix method (the exact bytes before
`,"access_key"` plus `}`, as the Go SDK does: immune to how the platform formats numbers), then
the Python SDK's re-serialisation, with `ensure_ascii` on and off; any match accepts, compared
without regard to case. `access_key` must be ours. Imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from typing import Any

# the signed part ends where `,"access_key":"..","hash":".."}` starts (whitespace after it allowed)
_TAIL = re.compile(rb',"access_key":"([^"\\]*)","hash":"([0-9A-Fa-f]{64})"\}\s*\Z')
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
# far above any instruction a plant engineer writes; refused before parsing (it is unverified)
MAX_INSTRUCTION_BYTES = 256 << 10


class InstructionError(ValueError):
    """An instruction that must not be executed; `cause` is a short, stable label for counting
    and for logging each kind of trouble once ("not_json", "bad_hash", "foreign_key", ...)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def _hmac(secret_key: str, body: bytes) -> str:
    return hmac.new(secret_key.encode(), body, hashlib.sha256).hexdigest()


def _compact(obj: Any, ensure_ascii: bool = True) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()


def sign_instruction(
    access_key: str,
    secret_key: str,
    thing_key: str,
    alert_key: str,
    instruction: dict[str, Any],
    timestamp: int,
) -> bytes:
    """The instruction as the platform publishes it (spec §8.2), `access_key` then `hash` last."""
    body = {
        "thing_key": thing_key,
        "alert_key": alert_key,
        "timestamp": timestamp,
        "instruction_wrapper": {"instruction": instruction},
    }
    signed = _compact(body)
    return signed[:-1] + _compact_tail(access_key, _hmac(secret_key, signed))


def _compact_tail(access_key: str, digest: str) -> bytes:
    return b',"access_key":' + _compact(access_key) + b',"hash":"' + digest.encode() + b'"}'


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InstructionError("not_json", f"the instruction repeats the key {key!r}")
        out[key] = value
    return out


def _parse(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_INSTRUCTION_BYTES:
        raise InstructionError(
            "too_large",
            f"the instruction has {len(payload)} bytes, over the {MAX_INSTRUCTION_BYTES} allowed",
        )
    try:
        obj = json.loads(payload, object_pairs_hook=_no_duplicates)
    except InstructionError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InstructionError("not_json", f"the instruction is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InstructionError("not_json", "the instruction is not a JSON object")
    return obj


def _hash_matches(payload: bytes, obj: dict[str, Any], secret_key: str, digest: str) -> bool:
    want = digest.lower()
    tail = _TAIL.search(payload)
    raw = tail is not None and payload[: tail.start()] + b"}"
    if raw and hmac.compare_digest(_hmac(secret_key, raw), want):
        return True
    rest = {k: v for k, v in obj.items() if k not in ("access_key", "hash")}
    return any(hmac.compare_digest(_hmac(secret_key, body), want) for body in _forms(rest))


def _forms(rest: dict[str, Any]) -> Iterator[bytes]:
    """The Python SDK's serialisations of the body, `ensure_ascii` on, then off."""
    yield _compact(rest, True)
    try:
        yield _compact(rest, False)
    except UnicodeEncodeError:  # a lone surrogate (\ud800) has no UTF-8 form to sign
        return


def verify_instruction(payload: bytes, access_key: str, secret_key: str) -> dict[str, Any]:
    """The verified instruction: `thing_key`, `alert_key`, `timestamp` and `instruction` (the
    user-defined object). Raises InstructionError naming the cause: never execute what fails."""
    obj = _parse(payload)
    digest = obj.get("hash")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise InstructionError("no_hash", "the instruction carries no 64-hex-digit `hash`")
    sender = obj.get("access_key")
    if sender != access_key:
        raise InstructionError(
            "foreign_key",
            f"the instruction is signed for access key {sender!r}, not ours: "
            "check cloud.access_key matches the platform's gateway",
        )
    if not _hash_matches(payload, obj, secret_key, digest):
        raise InstructionError(
            "bad_hash",
            "the instruction's hash does not match its body: it was altered on the way or "
            "cloud.secret_key is not the platform's; it is dropped, never executed",
        )
    return _fields(obj)


def _fields(obj: dict[str, Any]) -> dict[str, Any]:
    thing_key, alert_key, timestamp = (
        obj.get("thing_key"),
        obj.get("alert_key"),
        obj.get("timestamp"),
    )
    wrapper = obj.get("instruction_wrapper")
    instruction = wrapper.get("instruction") if isinstance(wrapper, dict) else None
    problems = [
        name
        for name, ok in (
            ("thing_key (a string)", isinstance(thing_key, str) and thing_key != ""),
            ("alert_key (a string)", isinstance(alert_key, str) and alert_key != ""),
            (
                "timestamp (an integer)",
                isinstance(timestamp, int) and not isinstance(timestamp, bool),
            ),
            ("instruction_wrapper.instruction (an object)", isinstance(instruction, dict)),
        )
        if not ok
    ]
    if problems:
        raise InstructionError("malformed", "the signed instruction lacks " + ", ".join(problems))
    return {
        "thing_key": thing_key,
        "alert_key": alert_key,
        "timestamp": timestamp,
        "instruction": instruction,
    }


def ack_body(alert_key: str, success: bool, message: str, timestamp: int) -> dict[str, Any]:
    """The instruction's acknowledgement (spec §8.4, the Python SDK's body): an alert carrying
    `alert_key` and `data.execution_status`; type 1 (WARNING, as the SDK) on success, 2 on
    failure. The transport signs and envelopes it like any alert."""
    return {
        "alert": {
            "message": message,
            "alert_key": alert_key,
            "alert_type": 1 if success else 2,
            "data": {"execution_status": "success" if success else "failed"},
            "timestamp": timestamp,
        }
    }
