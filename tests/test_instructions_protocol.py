"""protocol/instructions.py against the wire spec's vectors (§5, §8): signing, the three ways
of verifying, and every reason an instruction is refused."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from datonis_edge.protocol.instructions import (
    InstructionError,
    ack_body,
    sign_instruction,
    verify_instruction,
)

AK = "1d2fb5c369863fd54afafde654c26dtd51122t8e"  # the SDK READMEs' public sample keys
SK = "f4e31122629etaeaa48d9c8c72b8cctfc9d63acc"


def _hmac(body: bytes) -> str:
    return hmac.new(SK.encode(), body, hashlib.sha256).hexdigest()


def _wire(signed: bytes, digest: str, access_key: str = AK) -> bytes:
    return signed[:-1] + f',"access_key":"{access_key}","hash":"{digest}"}}'.encode()


def test_spec_vector_event_hash_matches_the_sdk_algorithm() -> None:
    body = b'{"data":{"pressure":42,"temperature":17},"thing_key":"614a5ed34c","timestamp":1531180873940}'
    assert _hmac(body) == "ec6fe2bf619a63f09632c6e6e2c515ba05066e8f70747acc27ca4a26363fa890"


def test_ack_body_is_the_python_sdk_body_of_the_spec_vector() -> None:
    body = ack_body("a5ad49t441", True, "Successfully handled instruction", 1531180874000)
    wire = json.dumps(body, separators=(",", ":")).encode()
    assert wire == (
        b'{"alert":{"message":"Successfully handled instruction","alert_key":"a5ad49t441",'
        b'"alert_type":1,"data":{"execution_status":"success"},"timestamp":1531180874000}}'
    )
    assert _hmac(wire) == "91d11f20ab5bda46ef5732120f3ff8537bc3423f8bf95d918031d0acbda34340"
    failed = ack_body("a5ad49t441", False, "no", 1)["alert"]
    assert failed["alert_type"] == 2 and failed["data"] == {"execution_status": "failed"}


def test_sign_instruction_is_the_platform_wire_form() -> None:
    wire = sign_instruction(AK, SK, "614a5ed34c", "a5ad49t441", {"status": "on"}, 1531180874000)
    signed = (
        b'{"thing_key":"614a5ed34c","alert_key":"a5ad49t441","timestamp":1531180874000,'
        b'"instruction_wrapper":{"instruction":{"status":"on"}}}'
    )
    assert wire == _wire(signed, _hmac(signed))
    assert json.loads(wire)["hash"] == (
        "0441e3bf1a5ff5f70c6122f408a69997815e588eb993a04a0c9458a0a4a1a560"
    )
    assert list(json.loads(wire))[-2:] == ["access_key", "hash"]


def test_verify_returns_the_fields() -> None:
    wire = sign_instruction(AK, SK, "t1", "k1", {"command": "set_speed", "value": 12.5}, 42)
    assert verify_instruction(wire, AK, SK) == {
        "thing_key": "t1",
        "alert_key": "k1",
        "timestamp": 42,
        "instruction": {"command": "set_speed", "value": 12.5},
    }


def test_raw_prefix_accepts_numbers_json_would_reformat() -> None:
    # `233.40` re-serialises as `233.4`: only the raw-prefix method can accept this
    signed = (
        b'{"thing_key":"t1","alert_key":"k1","timestamp":1,'
        b'"instruction_wrapper":{"instruction":{"value":233.40,"big":1E3}}}'
    )
    got = verify_instruction(_wire(signed, _hmac(signed)), AK, SK)
    assert got["instruction"] == {"value": 233.4, "big": 1000.0}


def test_reserialisation_accepts_raw_utf8_and_interleaved_keys() -> None:
    signed = '{"thing_key":"t1","alert_key":"k1","timestamp":1,"instruction_wrapper":{"instruction":{"mode":"régime"}}}'
    digest = _hmac(signed.encode())  # hashed over raw UTF-8 (ensure_ascii off)
    spaced = json.dumps(
        {**json.loads(signed), "access_key": AK, "hash": digest.upper()}, ensure_ascii=False
    ).encode()  # default separators: the raw method cannot match, re-serialising can
    assert verify_instruction(spaced, AK, SK)["instruction"] == {"mode": "régime"}
    # Java's HashMap order puts the envelope keys in the middle
    java = (
        f'{{"thing_key":"t1","hash":"{digest}","alert_key":"k1","access_key":"{AK}",'
        '"timestamp":1,"instruction_wrapper":{"instruction":{"mode":"r\\u00e9gime"}}}'
    )
    assert verify_instruction(java.encode(), AK, SK)["alert_key"] == "k1"


@pytest.mark.parametrize(
    ("payload", "cause", "words"),
    [
        (b"{not json", "not_json", "not JSON"),
        (b"[1,2]", "not_json", "not a JSON object"),
        (b'{"a":1,"a":2}', "not_json", "repeats the key 'a'"),
        (b" " * (256 << 10) + b"{}", "too_large", "over the 262144 allowed"),
        (b'{"thing_key":"t1","access_key":"%s"}' % AK.encode(), "no_hash", "`hash`"),
    ],
)
def test_unreadable_instructions_name_the_cause(payload: bytes, cause: str, words: str) -> None:
    with pytest.raises(InstructionError) as err:
        verify_instruction(payload, AK, SK)
    assert err.value.cause == cause and words in str(err.value)


def test_tampered_instruction_is_a_bad_hash() -> None:
    wire = sign_instruction(AK, SK, "t1", "k1", {"value": 10}, 1)
    with pytest.raises(InstructionError) as err:
        verify_instruction(wire.replace(b'"value":10', b'"value":99'), AK, SK)
    assert err.value.cause == "bad_hash" and "secret_key" in str(err.value)
    with pytest.raises(InstructionError) as err:
        verify_instruction(wire, AK, "another-secret")
    assert err.value.cause == "bad_hash"


def test_instruction_for_another_access_key_is_refused() -> None:
    wire = sign_instruction("someone-else", SK, "t1", "k1", {"value": 10}, 1)
    with pytest.raises(InstructionError) as err:
        verify_instruction(wire, AK, SK)
    assert err.value.cause == "foreign_key" and "'someone-else'" in str(err.value)


def test_signed_but_incomplete_instruction_is_malformed() -> None:
    signed = b'{"thing_key":"t1","timestamp":"soon","instruction_wrapper":{"instruction":[]}}'
    with pytest.raises(InstructionError) as err:
        verify_instruction(_wire(signed, _hmac(signed)), AK, SK)
    assert err.value.cause == "malformed"
    for field in ("alert_key", "timestamp", "instruction_wrapper.instruction"):
        assert field in str(err.value)
