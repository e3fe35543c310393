"""Logging for the gateway process: level and format from the command line, and a rate limiter.

`setup(level, fmt)` configures the root logger once: `text` is one human line per record,
`json` is one JSON object per line (time in ISO 8601 UTC, level, logger, message, and every
`extra={...}` field) for log shippers. Libraries that talk too much (uvicorn, aiohttp, httpx)
are kept at WARNING whatever the level; their records, and Python's warnings, go through the
same handler, so a JSON log is JSON on every line.

`RING` keeps the last records of this process in memory (a handler `setup` installs), already
formatted, for the console's Logs page: engineers without shell access read them there.

`OnceLogger` is for conditions that repeat (a device that does not answer every scan, an
uplink that refuses every batch): log the change once, then at most once per interval.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp", "httpx", "httpcore")

# every attribute a bare LogRecord has: whatever else is on a record came from `extra=`
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def level_problem(level: str) -> str | None:
    """None if `level` is a log level, else the sentence that says which ones are."""
    if level.lower() in LEVELS:
        return None
    return f"--log-level '{level}' is not a log level; use one of {', '.join(LEVELS)}"


def format_problem(fmt: str) -> str | None:
    if fmt.lower() in FORMATS:
        return None
    return f"--log-format '{fmt}' is not a log format; use one of {', '.join(FORMATS)}"


# UTF-8 is self-synchronizing: these bytes are those characters and nothing else
_LINE_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def json_line(record: dict[str, Any]) -> bytes:
    """One JSON line that every line reader splits right: orjson leaves U+0085, U+2028 and
    U+2029 raw, which Python's splitlines() (and JavaScript) take for line ends."""
    line = orjson.dumps(record, default=str)
    for raw, escaped in _LINE_BREAKS:
        line = line.replace(raw, escaped)
    return line + b"\n"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json_line(out)[:-1].decode()  # the handler adds the newline


# a second guard: the parts redact what they log, the console's page masks what slips through
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")
_SECRET_VALUE = re.compile(
    r"((?:secret_key|access_key|password|passwd|token|api_key)[\"']?\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s\",;]+)",
    re.IGNORECASE,
)


def redact(line: str) -> str:
    """`user:pass@` in a URL and the value of `secret_key=...`-like pairs become `***`."""
    return _SECRET_VALUE.sub(r"\1***", _USERINFO.sub(r"\1***@", line))


@dataclass(frozen=True, slots=True)
class LogLine:
    at_ms: int
    level: str  # DEBUG | INFO | WARNING | ERROR | CRITICAL
    logger: str
    text: str  # the formatted line (a traceback included), redacted


class LogRing(logging.Handler):
    """The last `max_records` log records, at most `max_bytes` of text (the oldest dropped
    first), each line cut at `max_line` characters. Thread-safe: threads log too."""

    def __init__(
        self, max_records: int = 2000, max_bytes: int = 1 << 20, max_line: int = 8192
    ) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(TEXT_FORMAT))
        self.max_bytes, self.max_line = max_bytes, max_line
        self.lines: deque[LogLine] = deque(maxlen=max_records)
        self.bytes = 0
        self.dropped = 0  # records no longer kept (since the start)
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = redact(self.format(record))[: self.max_line]
        except Exception:  # a record that does not format: the stream handler reports it
            return
        line = LogLine(int(record.created * 1000), record.levelname, record.name, text)
        with self._lock:
            if len(self.lines) == self.lines.maxlen:
                self._drop()
            self.lines.append(line)
            self.bytes += len(text)
            while self.bytes > self.max_bytes and len(self.lines) > 1:
                self._drop()

    def _drop(self) -> None:
        self.bytes -= len(self.lines.popleft().text)
        self.dropped += 1

    def recent(self, min_level: int = logging.NOTSET, text: str = "") -> list[LogLine]:
        """Oldest first: the kept lines at `min_level` or above containing `text` (any case)."""
        with self._lock:
            lines = list(self.lines)
        wanted = text.lower()
        return [
            line
            for line in lines
            if logging.getLevelName(line.level) >= min_level
            and (not wanted or wanted in line.text.lower())
        ]


RING = LogRing()


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger (validate with level_problem / format_problem first)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt.lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.addHandler(RING)  # the console's Logs page
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in QUIET_LIBRARIES:  # one line per request or connection is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python's warnings (a library's RuntimeWarning, ...) through the same handler, not as raw
    # stderr lines that a JSON log shipper cannot read
    logging.captureWarnings(True)


class OnceLogger:
    """Log a state change once, then at most once per interval with a suppressed count.

    Each condition has a key (``"device:plc-1"``, ``"uplink:datonis"``). The first
    ``log(key, ...)`` of a condition is written at once; repeats within ``interval_s`` are
    counted, not written; the first repeat after the interval is written with
    ``" (N more times in the last M s)"`` appended. ``resolve(key, ...)`` writes the recovery
    once (at INFO by default) and only if the condition had been logged, then forgets it, so
    the next ``log`` of that key is a new state change and is written at once::

        self._once = OnceLogger(log, interval_s=60)
        ...
        self._once.log(f"device:{name}", "device %s does not answer: %s; check ...", name, err)
        ...
        self._once.resolve(f"device:{name}", "device %s answers again", name)

    Both return True when a line was written. Not thread-safe: use one per event loop/thread.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._active: dict[str, list[float | int]] = {}  # key -> [last written at, suppressed]

    def log(self, key: str, msg: str, *args: Any, level: int = logging.WARNING, **kw: Any) -> bool:
        now = self._clock()
        state = self._active.get(key)
        if state is None:
            self._active[key] = [now, 0]
            self.logger.log(level, msg, *args, **kw)
            return True
        if now - state[0] < self.interval_s:
            state[1] += 1
            return False
        suppressed, since = int(state[1]), now - state[0]
        self._active[key] = [now, 0]
        if suppressed:
            msg += f" ({suppressed} more times in the last {since:.0f} s)"
        self.logger.log(level, msg, *args, **kw)
        return True

    def resolve(self, key: str, msg: str, *args: Any, level: int = logging.INFO, **kw: Any) -> bool:
        if self._active.pop(key, None) is None:
            return False
        self.logger.log(level, msg, *args, **kw)
        return True
