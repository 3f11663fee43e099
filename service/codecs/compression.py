"""Request content codings (`Content-Encoding: gzip | deflate`), inflated incrementally.

The body-size limit applies to the decoded size: each chunk is inflated with zlib's
`max_length` bound, so a compressed bomb stops being inflated as soon as its output passes the
limit (a 413), never after it was inflated in full.
"""

from __future__ import annotations

import zlib

from service.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

#: zlib window bits per coding: gzip's header; "deflate" is the zlib format (RFC 9110 8.4.1.2).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
SUPPORTED = ("gzip", "deflate")


def too_large(limit: int, received: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body too large: limit {limit} bytes, received {received}",
        field="body",
        expected=f"at most {limit} bytes",
        received=received,
    )


class Inflater:
    """Decodes one request body chunk by chunk, never producing more than `limit` bytes."""

    def __init__(self, coding: str, limit: int) -> None:
        coding = coding.strip().lower()
        if coding not in _WBITS:
            raise UnsupportedMediaType(
                f"content encoding {coding!r} is not supported; send one of: "
                f"{', '.join(SUPPORTED)} or none",
                field="Content-Encoding",
                expected=" | ".join(SUPPORTED),
                received=coding,
            )
        self.coding = coding
        self.limit = limit
        self.produced = 0
        self._inflate = zlib.decompressobj(_WBITS[coding])

    def feed(self, data: bytes, final: bool = False) -> bytes:
        """The decoded bytes of the next chunk (with `final`, the stream must end here)."""
        out = []
        pending = data
        try:
            while pending or (final and not self._inflate.eof):
                room = self.limit - self.produced + 1  # one byte over the limit proves it
                chunk = self._inflate.decompress(pending, room)
                pending = self._inflate.unconsumed_tail
                self.produced += len(chunk)
                if self.produced > self.limit:
                    raise too_large(self.limit, f"more than {self.limit} bytes once decoded")
                out.append(chunk)
                if self._inflate.eof or (not chunk and not pending):
                    break
        except zlib.error as exc:
            raise self._malformed(str(exc)) from None
        if self._inflate.eof and self._inflate.unused_data:
            raise self._malformed("data after the end of the compressed stream")
        if final and not self._inflate.eof:
            raise self._malformed("the compressed stream is truncated")
        return b"".join(out)

    def _malformed(self, detail: str) -> MalformedRequest:
        return MalformedRequest(
            f"body is not valid {self.coding} data: {detail}",
            field="body",
            expected=f"a {self.coding}-compressed body (Content-Encoding: {self.coding})",
            received="corrupt compressed data",
        )


def decompress(body: bytes, coding: str, limit: int) -> bytes:
    """A whole body decoded at once (tests, clients); the same checks as the incremental path."""
    return Inflater(coding, limit).feed(body, final=True)
