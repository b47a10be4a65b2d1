"""Body limits: decode Content-Encoding ourselves, bounded, while streaming.

httpx's own decoders inflate a whole network chunk at once (a 64 KiB chunk of a gzip bomb is
tens of MiB). Here every decompress call gets ``max_length`` so no more than the cap plus one
small chunk is ever held, and the fetch fails as too-large the moment the cap is passed.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

ACCEPT_ENCODING = "gzip, deflate"
_STEP = 64 * 1024  # largest piece inflated per decompress call


class BodyTooLargeError(Exception):
    """The decoded body passed the cap."""


class ContentEncodingError(Exception):
    """The body is not valid for its Content-Encoding, or uses one we never asked for."""


class BoundedDecoder:
    """Turns raw body chunks into decoded chunks, counting decoded bytes against ``cap``."""

    def __init__(self, content_encoding: str | None, cap: int) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise ContentEncodingError(f"stacked content encodings {content_encoding!r}")
        self.coding = codings[0] if codings else None
        if self.coding not in (None, "gzip", "x-gzip", "deflate"):
            raise ContentEncodingError(f"unsupported content encoding {self.coding!r}")
        self.cap = cap
        self.size = 0
        self._obj: zlib._Decompress | None = None
        self._raw_tried = False
        self._inflated_any = False
        if self.coding is not None:
            self._obj = zlib.decompressobj(zlib.MAX_WBITS | 32)

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.cap:
            raise BodyTooLargeError(f"decoded body exceeds {self.cap} bytes")
        return piece

    def _inflate(self, data: bytes) -> list[bytes]:
        assert self._obj is not None
        out: list[bytes] = []
        while data:
            try:
                piece = self._obj.decompress(data, _STEP)
            except zlib.error as exc:
                if self.coding == "deflate" and not self._raw_tried and not self._inflated_any:
                    # Servers that say "deflate" often send raw deflate without a zlib header;
                    # the header check fails on the very first bytes, so retry them raw.
                    self._raw_tried = True
                    self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise ContentEncodingError(f"bad {self.coding} body: {exc}") from exc
            self._inflated_any = True
            if piece:
                out.append(self._count(piece))
            data = self._obj.unconsumed_tail
            if self._obj.eof and self._obj.unused_data:
                # Concatenated gzip members: start the next one.
                rest = self._obj.unused_data
                self._obj = zlib.decompressobj(zlib.MAX_WBITS | 32)
                data = rest
        return out

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._obj is None:
            return [self._count(chunk)] if chunk else []
        return self._inflate(chunk)

    def flush(self) -> list[bytes]:
        if self._obj is None:
            return []
        try:
            tail = self._obj.flush(_STEP)
        except zlib.error as exc:
            raise ContentEncodingError(f"bad {self.coding} body: {exc}") from exc
        return [self._count(tail)] if tail else []


async def read_capped(
    chunks: AsyncIterator[bytes], content_encoding: str | None, cap: int
) -> bytes:
    """Read a raw body stream to decoded bytes, failing as soon as ``cap`` is passed."""
    decoder = BoundedDecoder(content_encoding, cap)
    parts: list[bytes] = []
    async for chunk in chunks:
        parts.extend(decoder.feed(chunk))
    parts.extend(decoder.flush())
    return b"".join(parts)
