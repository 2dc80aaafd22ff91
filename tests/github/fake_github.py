"""A local stand-in for GitHub's statuses and issue-comments endpoints: a real HTTP server that
records every call.

The only fake in these tests: GitHub's API is the external edge.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    answer_status: int = 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def statuses(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if "/statuses/" in r.path]

    def comments(self) -> list[Recorded]:
        """Pull-request comments created (POST) and edited (PATCH), in order."""
        with self.lock:
            return [r for r in self.requests if "/comments" in r.path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_fake_github() -> FakeGitHub:
    holder: list[FakeGitHub] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            self.do_POST(method="PATCH")

        def do_POST(self, method: str = "POST") -> None:
            fake = holder[0]
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            with fake.lock:
                fake.requests.append(
                    Recorded(
                        method, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
            # Comments keep their id when edited (GitHub answers 200 with the comment).
            edited = method == "PATCH" and self.path.rsplit("/", 1)[-1].isdigit()
            comment_id = int(self.path.rsplit("/", 1)[-1]) if edited else 1000 + len(fake.requests)
            payload = json.dumps({"id": comment_id}).encode()
            self.send_response(200 if edited else fake.answer_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeGitHub(server)
    holder.append(fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake
