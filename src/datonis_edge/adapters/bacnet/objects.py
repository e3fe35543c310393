"""BACnet object identifiers as the config writes them (`analog-input,1`, `AI:1`) and the
kinds of object the adapter reads: light to import (no bacpypes3)."""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_INSTANCE = 4_194_302  # 22 bits; 4194303 is the wildcard

# object type -> what its present-value is: analog REAL, binary BinaryPV, multi-state Unsigned
KINDS = {
    "analog-input": "analog", "analog-output": "analog", "analog-value": "analog",
    "binary-input": "binary", "binary-output": "binary", "binary-value": "binary",
    "multi-state-input": "multistate", "multi-state-output": "multistate",
    "multi-state-value": "multistate",
}  # fmt: skip
ABBREVIATIONS = {
    "ai": "analog-input", "ao": "analog-output", "av": "analog-value",
    "bi": "binary-input", "bo": "binary-output", "bv": "binary-value",
    "mi": "multi-state-input", "msi": "multi-state-input",
    "mo": "multi-state-output", "mso": "multi-state-output",
    "mv": "multi-state-value", "msv": "multi-state-value",
}  # fmt: skip
_ID = re.compile(r"^\s*([A-Za-z][A-Za-z-]*)\s*[,:]\s*(\d+)\s*$")
_EXAMPLE = "write it like analog-input,1 or AI:1"


class ObjectId(NamedTuple):
    type: str  # analog-input ... multi-state-value
    instance: int

    def __str__(self) -> str:
        return f"{self.type},{self.instance}"

    @property
    def kind(self) -> str:
        return KINDS[self.type]

    @property
    def is_input(self) -> bool:
        return self.type.endswith("-input")


def _type_name(text: str) -> str | None:
    low = text.lower()
    if low in ABBREVIATIONS:
        return ABBREVIATIONS[low]
    # analogInput, analog-input, multistate-value, multiStateValue
    spelled = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", text).lower().replace("multistate", "multi-state")
    return spelled if spelled in KINDS else None


def parse_object_id(text: str) -> ObjectId:
    """`analog-input,1`, `AI:1`, `analogInput:1` ... as an ObjectId, or ValueError naming what
    is wrong and how to write it."""
    match = _ID.match(str(text))
    if not match:
        raise ValueError(f"'{text}' is not a BACnet object id; {_EXAMPLE}")
    kind, instance = _type_name(match.group(1)), int(match.group(2))
    if kind is None:
        raise ValueError(
            f"'{text}': '{match.group(1)}' is not an object type this adapter reads "
            "(analog-, binary- or multi-state- input/output/value: AI, AO, AV, BI, BO, BV, "
            "MSI, MSO, MSV)"
        )
    if instance > MAX_INSTANCE:
        raise ValueError(f"'{text}': instance {instance} is past {MAX_INSTANCE} (22 bits)")
    return ObjectId(kind, instance)


# bytes one present-value takes in a ReadPropertyMultiple answer, at most: object id (5),
# opening/closing tags (4), property id (2), a REAL or Unsigned32 or error (5)
RPM_RESULT_BYTES = 16
RPM_HEADER_BYTES = 4  # complex-ACK header and service choice


def objects_per_request(max_apdu: int) -> int:
    """How many present-values one unsegmented RPM answer of `max_apdu` bytes carries."""
    return max(1, (max_apdu - RPM_HEADER_BYTES) // RPM_RESULT_BYTES)
