"""MTConnect response documents (Devices, Streams, Error) read safely and namespace-blind.

The agent is on the network, so it is treated as an adversary: a document is refused when it
is larger than the configured bound (checked while reading, in http.py), when it declares a
DOCTYPE or entities (no entity is ever expanded, no DTD or external file is loaded), or when
it is not MTConnect. Every version is read alike: MTConnect 1.x and 2.x differ in the
namespace (`urn:mtconnect.org:MTConnectStreams:1.3`, `...:2.0`), not in what we read.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lxml import etree

_NAMESPACE = re.compile(r"^urn:mtconnect\.org:MTConnect(Devices|Streams|Error):(\d+)\.(\d+)$")
_INF = math.inf
_MAX_TEXT = 65_536  # the longest string a reading may hold (readings.MAX_STRING_LENGTH)
_CATEGORIES = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_pis=True
)


class BadDocument(Exception):
    """The agent answered something that is not a usable MTConnect document."""


@dataclass(frozen=True)
class DataItem:
    id: str
    name: str
    category: str  # SAMPLE, EVENT, CONDITION
    type: str
    units: str
    device: str


@dataclass
class Header:
    instance_id: str
    first: int = 0
    last: int = 0
    next: int = 0
    buffer_size: int = 0


class Observation(NamedTuple):
    data_item_id: str
    sequence: int
    timestamp_ms: int
    category: str
    value: Any  # SAMPLE: float, list of floats or None; EVENT: str or None; CONDITION: level
    native_code: str | None = None
    message: str | None = None


@dataclass
class Streams:
    header: Header
    observations: list[Observation] = field(default_factory=list)


@dataclass
class AgentError:
    header: Header
    codes: list[str]
    text: str


def _root(body: bytes) -> tuple[etree._Element, str]:
    head = body[:4096]
    if b"<!DOCTYPE" in head or b"<!ENTITY" in body:
        raise BadDocument("the document declares a DOCTYPE or entities, which MTConnect never does")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadDocument(f"not well-formed XML ({exc})") from None
    if root.getroottree().docinfo.doctype:
        raise BadDocument("the document declares a DOCTYPE, which MTConnect never does")
    qname = etree.QName(root)
    match = _NAMESPACE.match(qname.namespace or "")
    if not match or f"MTConnect{match.group(1)}" != qname.localname:
        raise BadDocument(
            f"<{qname.localname}> in namespace '{qname.namespace}' is not an MTConnect document"
        )
    return root, match.group(1)


def _local(el: etree._Element) -> str:
    tag = el.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(el: etree._Element, name: str) -> etree._Element | None:
    for c in el:
        if _local(c) == name:
            return c
    return None


def _header(root: etree._Element) -> Header:
    h = _child(root, "Header")
    if h is None or not h.get("instanceId"):
        raise BadDocument("the document has no Header with an instanceId")
    try:
        return Header(
            instance_id=h.get("instanceId", ""),
            first=int(h.get("firstSequence", 0)),
            last=int(h.get("lastSequence", 0)),
            next=int(h.get("nextSequence", 0)),
            buffer_size=int(h.get("bufferSize", 0)),
        )
    except ValueError:
        raise BadDocument("the Header's sequence numbers are not numbers") from None


_MINUTES: dict[str, int] = {}  # "2026-11-26T06:07" -> its epoch ms (a small cache)


def timestamp_ms(text: str) -> int:
    """An MTConnect timestamp (ISO 8601, UTC, up to microseconds) as epoch milliseconds,
    truncated. The common form (`2026-11-26T06:07:48.893375Z`) is read by its minute, which
    is cached; anything else goes through datetime."""
    if len(text) >= 20 and text[-1] == "Z" and text[16] == ":" and text[10] == "T":
        minute = _MINUTES.get(text[:16])
        if minute is None:
            if len(_MINUTES) > 4096:
                _MINUTES.clear()
            minute = _MINUTES[text[:16]] = _slow_ms(text[:16] + ":00Z")
        seconds, _, fraction = text[17:-1].partition(".")
        if len(seconds) == 2 and seconds.isdigit() and (not fraction or fraction.isdigit()):
            return minute + int(seconds) * 1000 + int((fraction + "00")[:3])
    return _slow_ms(text)


def _slow_ms(text: str) -> int:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    stamp = dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


def sample_value(text: str | None) -> float | list[float] | str | None:
    """A SAMPLE's value: a number, several (a 3D position, a time series), or None when the
    agent says UNAVAILABLE (or NaN/INF, which JSON cannot carry). A sample that is not a
    number (a misconfigured adapter) is passed on as its text rather than stalling the agent."""
    text = (text or "").strip()
    if not text or text == "UNAVAILABLE":
        return None
    try:
        numbers = [float(p) for p in text.split()]
    except ValueError:
        return text[:1024]
    if not all(math.isfinite(n) for n in numbers):
        return None
    return numbers[0] if len(numbers) == 1 else numbers


def parse_devices(body: bytes) -> tuple[Header, list[DataItem]]:
    """The data items of every device of a /probe answer."""
    root, kind = _root(body)
    if kind == "Error":
        raise BadDocument(f"the agent answered an error to /probe: {_error(root).text}")
    if kind != "Devices":
        raise BadDocument(f"/probe answered an MTConnect{kind} document, not MTConnectDevices")
    header = _header(root)
    items: list[DataItem] = []
    devices = _child(root, "Devices")
    for device in devices if devices is not None else []:
        device_name = device.get("name") or device.get("uuid") or ""
        for el in device.iter():
            if _local(el) != "DataItem" or not el.get("id"):
                continue
            items.append(
                DataItem(
                    id=el.get("id", ""),
                    name=el.get("name") or "",
                    category=el.get("category", ""),
                    type=el.get("type", ""),
                    units=el.get("units") or "",
                    device=device_name,
                )
            )
    return header, items


def parse_streams(body: bytes) -> Streams | AgentError:
    """The observations of a /current or /sample answer (or the agent's error), in sequence
    order."""
    root, kind = _root(body)
    if kind == "Error":
        return _error(root)
    if kind != "Streams":
        raise BadDocument(f"expected MTConnectStreams, got MTConnect{kind}")
    out = Streams(_header(root))
    streams = _child(root, "Streams")
    if streams is None:
        return out
    append = out.observations.append
    stamps: dict[str, int] = {}  # the observations of one instant share their timestamp
    try:
        for device in streams:
            for component in device:
                for group in component:
                    category = _CATEGORIES.get(_local(group))
                    if category is None:
                        continue
                    for el in group:
                        if not isinstance(el.tag, str):
                            continue
                        attrib = el.attrib
                        stamp = attrib.get("timestamp", "")
                        ms = stamps.get(stamp)
                        if ms is None:
                            ms = stamps[stamp] = timestamp_ms(stamp)
                        text = el.text
                        code = message = None
                        if category == "SAMPLE":
                            try:
                                value: Any = float(text)  # type: ignore[arg-type]
                                if not -_INF < value < _INF:
                                    value = None
                            except (TypeError, ValueError):
                                value = sample_value(text)
                        elif category == "EVENT":
                            value = (text or "").strip()[:_MAX_TEXT]
                            if value == "UNAVAILABLE":
                                value = None
                        else:
                            value = _local(el).lower()  # normal, warning, fault, unavailable
                            code = attrib.get("nativeCode")
                            message = (text or "").strip()[:_MAX_TEXT] or None
                        append(
                            Observation(
                                attrib.get("dataItemId", ""),
                                int(attrib.get("sequence", "0")),
                                ms,
                                category,
                                value,
                                code,
                                message,
                            )
                        )
    except ValueError as exc:
        raise BadDocument(f"an observation has a bad sequence or timestamp ({exc})") from None
    out.observations.sort(key=_by_sequence)
    return out


def _by_sequence(o: Observation) -> int:
    return o.sequence


def _error(root: etree._Element) -> AgentError:
    codes: list[str] = []
    texts: list[str] = []
    for el in root.iter():
        if _local(el) == "Error":
            codes.append(el.get("errorCode", ""))
            texts.append((el.text or "").strip())
    header = _child(root, "Header")
    return AgentError(
        Header(instance_id=header.get("instanceId", "") if header is not None else ""),
        codes,
        "; ".join(f"{c}: {t}" if t else c for c, t in zip(codes, texts, strict=True)),
    )
