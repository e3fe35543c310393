"""HTTP to one MTConnect agent (aiohttp): bounded documents, one at a time or as a stream.

`get()` answers one document's bytes; `stream()` yields the parts of a long-poll
`/sample?interval=` answer (multipart/x-mixed-replace), each bounded like a document. An agent
that does not stream answers one plain document, which `stream()` yields as its only part.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .documents import BadDocument


class AgentUnreachable(Exception):
    """The agent did not answer, or answered something other than an MTConnect document."""


async def _bounded(read: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await read(65_536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BadDocument(
                f"a document over max_document_bytes ({limit} bytes); raise it if the agent is trusted"
            )
        chunks.append(chunk)


class AgentClient:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, device: str, timeout_s: float, limit: int
    ) -> None:
        self.session = session
        self.base = f"{url}/{device}" if device else url
        self.timeout_s = timeout_s
        self.limit = limit
        self.requests = 0

    def _check(self, resp: aiohttp.ClientResponse, path: str) -> None:
        kind = resp.headers.get("Content-Type", "")
        # agents answer errors (OUT_OF_RANGE, ...) with 4xx and an MTConnectError document
        if "xml" not in kind and "multipart" not in kind:
            raise AgentUnreachable(
                f"{self.base}/{path} answered HTTP {resp.status} ({kind or 'no content type'}), not MTConnect XML"
            )

    async def get(self, path: str, **params: Any) -> bytes:
        self.requests += 1
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self.session.get(
                f"{self.base}/{path}", params=params or None, timeout=timeout
            ) as resp:
                self._check(resp, path)
                return await _bounded(resp.content.read, self.limit)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AgentUnreachable(
                f"{self.base}/{path}: {str(exc) or exc.__class__.__name__}"
            ) from None

    async def stream(self, path: str, quiet_s: float, **params: Any) -> AsyncIterator[bytes]:
        """The parts of a long poll; AgentUnreachable when none comes within `quiet_s` (the
        agent sends an empty document every heartbeat, so silence means trouble)."""
        self.requests += 1
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_read=quiet_s)
        try:
            async with self.session.get(
                f"{self.base}/{path}", params=params, timeout=timeout
            ) as resp:
                self._check(resp, path)
                if not resp.headers.get("Content-Type", "").startswith("multipart/"):
                    yield await _bounded(resp.content.read, self.limit)
                    return
                reader = aiohttp.MultipartReader.from_response(resp)
                while True:
                    part = await asyncio.wait_for(reader.next(), quiet_s)
                    if part is None:
                        return
                    if not isinstance(part, aiohttp.BodyPartReader):
                        raise BadDocument("a nested multipart part in the stream")
                    yield await _bounded(part.read_chunk, self.limit)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise AgentUnreachable(
                f"{self.base}/{path} stream: {str(exc) or exc.__class__.__name__}"
            ) from None
