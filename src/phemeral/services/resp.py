"""Just enough of the Redis protocol (RESP2) for the platform's own administrative commands."""

from __future__ import annotations

import socket

from phemeral.errors import ServiceFailure

Reply = str | int | bytes | list["Reply"] | None


class RedisError(ServiceFailure):
    """The server answered with an error reply."""


def encode(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the Redis server")
        self.buf += chunk

    def reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(f"Redis answered: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buf) < size + 2:
                self._more()
            data, self.buf = self.buf[:size], self.buf[size + 2 :]
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


def call(
    host: str, port: int, user: str, password: str, *command: str, timeout: float = 10.0
) -> Reply:
    """``AUTH user password`` then ``command`` on a fresh connection; the command's reply."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(encode("AUTH", user, password) + encode(*command))
        reader = _Reader(sock)
        reader.reply()
        return reader.reply()
