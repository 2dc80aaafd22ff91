"""Incremental, strict decoder of the chunked transfer coding (pure).

Feed it bytes as they arrive; it says how many it consumed, returns the data pieces, and
whether the message ended (the last chunk and its trailer section were read). Anything that
is not exactly ``hex-size [;ext] CRLF data CRLF`` … ``0 CRLF [trailers] CRLF`` is an error:
sizes with signs or spaces, a missing CRLF after the data (the ``helloXX`` smuggling case),
oversized size lines or trailers.
"""

from __future__ import annotations

from phemeral.errors import InvalidInput

MAX_SIZE_LINE = 4096
MAX_TRAILERS = 16 * 1024
_HEX = frozenset(b"0123456789abcdefABCDEF")
_EXT_BAD = frozenset(range(0x20)) - {0x09} | {0x7F}

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkError(InvalidInput):
    """The chunked body is malformed."""


class ChunkedDecoder:
    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _SIZE
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Decode from ``data``; returns (data pieces, bytes consumed).

        Consumption stops right after the message ends; the rest of ``data`` belongs to what
        follows (a pipelined request, or garbage the caller refuses).
        """
        pieces: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state == _DONE:
                break
            else:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                self._line += data[pos:stop]
                pos = stop
                if newline < 0:
                    limit = MAX_SIZE_LINE if state != _TRAILER else MAX_TRAILERS
                    if len(self._line) > limit:
                        raise ChunkError("chunk size line or trailer too long")
                    break
                line = bytes(self._line)
                self._line.clear()
                if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                    raise ChunkError("bare LF or CR in chunked framing")
                self._line_done(line[:-2])
        return pieces, pos

    def _line_done(self, line: bytes) -> None:
        state = self._state
        if state == _DATA_END:
            if line:
                raise ChunkError("chunk data is not followed by CRLF")
            self._state = _SIZE
        elif state == _SIZE:
            size_text, _, ext = line.partition(b";")
            if not size_text or len(size_text) > 15 or not _HEX.issuperset(size_text):
                raise ChunkError("invalid chunk size")
            if len(line) > MAX_SIZE_LINE or not _EXT_BAD.isdisjoint(ext):
                raise ChunkError("invalid chunk extension")
            size = int(size_text, 16)
            if size == 0:
                self._state = _TRAILER
            else:
                self._remaining = size
                self._state = _DATA
        else:  # trailer section
            if not line:
                self._state = _DONE
                return
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILERS:
                raise ChunkError("trailer section too large")
            if line[0] in (0x20, 0x09) or b":" not in line:
                raise ChunkError("malformed trailer field")


def encode_chunk(piece: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(piece), piece)


LAST_CHUNK = b"0\r\n\r\n"
