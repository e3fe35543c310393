"""LZF bodies in the "ZV" chunk framing of liblzf's `lzf` command (wire spec §9.2).

A body is a run of chunks, each one of:

    'Z' 'V' 0x00 <us:u16be> <us bytes, stored as they are>
    'Z' 'V' 0x01 <cs:u16be> <us:u16be> <cs bytes of raw LZF that decode to us bytes>

The raw LZF codec is liblzf's format. A token starting with a byte below 32 is a literal run
of (byte + 1) bytes; any other is a back-reference: length (byte >> 5) + 2, where 7 means
"add the next byte", then the offset ((byte & 0x1f) << 8 | next byte) + 1 back from the
end of the output.

The C binding (`python-neo-lzf`, module `lzf`) does the work where it is installed; the pure
Python codec below is the fallback (1-4 MB/s to compress, see docs/benchmarks.md) and the
reference the tests hold the binding to. Decoding is bounded either way: a chunk never yields
more than its header declares, and a body never more than `max_size`; damaged input raises
LZFError naming the byte where it went wrong.
"""

from __future__ import annotations

from collections.abc import Callable

try:  # the C codec when its wheel is installed (not on every platform)
    import lzf as _lzf_c
except ImportError:  # pragma: no cover - depends on the platform
    _lzf_c = None

# The C SDK, the one SDK that compresses HTTP bodies, cuts the input into 3000-byte chunks
# (LZFcompress.c); the platform takes any chunk up to 0xFFFF (Java's LZFEncoder uses that).
CHUNK_SIZE = 3000
MAX_CHUNK = 0xFFFF
DEFAULT_MAX_SIZE = 64 << 20  # a decoded body larger than this is refused

_MAX_OFFSET = 1 << 13  # 13 bits of offset
_MAX_REF = 7 + 255 + 2  # longest back-reference
_MAX_LITERAL = 32


class LZFError(ValueError):
    """A body that is not valid ZV-framed LZF (or decodes to more than allowed)."""


def compress_raw_py(data: bytes, max_len: int | None = None) -> bytes | None:
    """Raw LZF of `data` (pure Python), or None when it does not fit in `max_len` bytes."""
    n = len(data)
    limit = n + n // 32 + 1 if max_len is None else max_len
    out = bytearray()
    table: dict[bytes, int] = {}
    lit = 0  # start of the pending literal run
    i = 0
    while i < n - 2:
        key = data[i : i + 3]
        ref = table.get(key)
        table[key] = i
        if ref is None or i - ref > _MAX_OFFSET:
            i += 1
            continue
        length = 3
        longest = min(n - i, _MAX_REF)
        while length < longest and data[ref + length] == data[i + length]:
            length += 1
        _literals(out, data, lit, i)
        off = i - ref - 1
        code = length - 2
        if code < 7:
            out.append((code << 5) | (off >> 8))
        else:
            out += bytes(((7 << 5) | (off >> 8), code - 7))
        out.append(off & 0xFF)
        # remember the positions at the end of the match (as liblzf does) for what follows
        for j in range(max(i + 1, i + length - 2), min(i + length, n - 2)):
            table[data[j : j + 3]] = j
        i += length
        lit = i
        if len(out) > limit:
            return None
    _literals(out, data, lit, n)
    return bytes(out) if len(out) <= limit else None


def _literals(out: bytearray, data: bytes, start: int, end: int) -> None:
    for pos in range(start, end, _MAX_LITERAL):
        run = data[pos : min(pos + _MAX_LITERAL, end)]
        out.append(len(run) - 1)
        out += run


def decompress_raw_py(src: bytes, size: int) -> bytes:
    """Decode raw LZF that must yield exactly `size` bytes (pure Python)."""
    out = bytearray()
    n = len(src)
    i = 0
    while i < n:
        ctrl = src[i]
        i += 1
        if ctrl < 32:
            run = ctrl + 1
            if i + run > n:
                raise LZFError(f"byte {i - 1}: literal run of {run} bytes past the end")
            if len(out) + run > size:
                raise LZFError(f"byte {i - 1}: output longer than the declared {size} bytes")
            out += src[i : i + run]
            i += run
            continue
        length = ctrl >> 5
        if length == 7:
            if i >= n:
                raise LZFError(f"byte {i - 1}: back-reference cut short")
            length += src[i]
            i += 1
        if i >= n:
            raise LZFError(f"byte {i - 1}: back-reference cut short")
        off = ((ctrl & 0x1F) << 8 | src[i]) + 1
        i += 1
        length += 2
        start = len(out) - off
        if start < 0:
            raise LZFError(f"byte {i - 2}: back-reference before the start of the output")
        if len(out) + length > size:
            raise LZFError(f"byte {i - 2}: output longer than the declared {size} bytes")
        if off >= length:
            out += out[start : start + length]
        else:  # overlapping: the last `off` bytes repeat
            out += (out[start:] * (length // off + 1))[:length]
    if len(out) != size:
        raise LZFError(f"decoded {len(out)} bytes where the header declares {size}")
    return bytes(out)


def _compress_raw_c(data: bytes, max_len: int | None = None) -> bytes | None:
    return _lzf_c.compress(data, max_len) if max_len is not None else _lzf_c.compress(data)


def _decompress_raw_c(src: bytes, size: int) -> bytes:
    try:
        out = _lzf_c.decompress(src, size) if size else None
    except ValueError:
        out = None
    if out is not None and len(out) == size:
        return out
    # damaged (or empty): the Python decoder finds the same fault and names where it is
    return decompress_raw_py(src, size)


compress_raw: Callable[..., bytes | None] = _compress_raw_c if _lzf_c else compress_raw_py
decompress_raw: Callable[[bytes, int], bytes] = _decompress_raw_c if _lzf_c else decompress_raw_py
NATIVE = _lzf_c is not None


def encode(data: bytes, chunk_size: int = CHUNK_SIZE) -> bytes:
    """ZV-framed LZF of `data`: a compressed chunk where it saves bytes, else a stored one."""
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must be 1..{MAX_CHUNK}, not {chunk_size}")
    out = bytearray()
    view = memoryview(data)
    for pos in range(0, len(data), chunk_size):
        chunk = bytes(view[pos : pos + chunk_size])
        us = len(chunk)
        packed = compress_raw(chunk, us - 4) if us > 4 else None
        if packed:
            cs = len(packed)
            out += b"ZV\x01" + cs.to_bytes(2, "big") + us.to_bytes(2, "big") + packed
        else:
            out += b"ZV\x00" + us.to_bytes(2, "big") + chunk
    return bytes(out)


def decode(body: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The bytes a ZV-framed LZF body holds; LZFError names what is wrong and where."""
    parts: list[bytes] = []
    total = 0
    pos = 0
    n = len(body)
    while pos < n:
        if body[pos : pos + 2] != b"ZV" or pos + 3 > n:
            raise LZFError(f"byte {pos}: expected a 'ZV' chunk header")
        kind = body[pos + 2]
        if kind == 0:
            if pos + 5 > n:
                raise LZFError(f"byte {pos}: stored chunk header cut short")
            us = int.from_bytes(body[pos + 3 : pos + 5], "big")
            start, cs = pos + 5, us
        elif kind == 1:
            if pos + 7 > n:
                raise LZFError(f"byte {pos}: compressed chunk header cut short")
            cs = int.from_bytes(body[pos + 3 : pos + 5], "big")
            us = int.from_bytes(body[pos + 5 : pos + 7], "big")
            start = pos + 7
        else:
            raise LZFError(f"byte {pos + 2}: unknown chunk type {kind} (0 stored, 1 LZF)")
        if start + cs > n:
            raise LZFError(f"byte {pos}: chunk of {cs} bytes runs past the end of the body")
        total += us
        if total > max_size:
            raise LZFError(f"body decodes to more than {max_size} bytes; refused")
        payload = body[start : start + cs]
        if kind == 1:
            try:
                payload = decompress_raw(payload, us)
            except LZFError as exc:
                raise LZFError(f"chunk at byte {pos}: {exc}") from None
        parts.append(payload)
        pos = start + cs
    return b"".join(parts)
