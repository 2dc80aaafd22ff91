"""A local stand-in for GitHub's API: a real HTTP server that records every call.

The only fake in these tests (GitHub's API is the external edge). It speaks what GitHub
documents, and no more:

- ``POST /repos/{o}/{r}/statuses/{sha}``, ``POST /repos/{o}/{r}/issues/{n}/comments``,
  ``PATCH /repos/{o}/{r}/issues/comments/{id}``;
- with `FakeGitHub.register_app`, a GitHub App: ``POST /app/installations/{id}/access_tokens``
  and ``GET /repos/{o}/{r}/installation``, authenticated by the App's JWT (RS256 signature
  checked with the App's public key, ``iss``, ``iat``/``exp`` and their 10-minute limit), and
  issued installation tokens checked on every statuses/comments call (expired or revoked: 401
  ``Bad credentials``);
- with `FakeGitHub.serve_git`, a repository over git's smart HTTP (``git http-backend``) under
  ``/git/``, that only an unexpired installation token as HTTP Basic ``x-access-token`` reads.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

DOCS = "https://docs.github.com/rest"
BAD_JWT = "A JSON web token could not be decoded"
BAD_CREDENTIALS = "Bad credentials"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class App:
    app_id: int
    public_key: RSAPublicKey
    installations: dict[int, str]  # installation id → the repository it covers (owner/name)
    token_seconds: int = 3600  # GitHub's installation tokens live one hour
    issued: dict[str, tuple[int, float]] = field(default_factory=dict)  # token → (inst, expiry)
    revoked: set[str] = field(default_factory=set)


@dataclass
class FakeGitHub:
    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    answer_status: int = 201
    lock: threading.Lock = field(default_factory=threading.Lock)
    app: App | None = None
    git_root: Path | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def register_app(
        self, app_id: int, public_key: RSAPublicKey, installations: dict[int, str]
    ) -> App:
        """From now on the App's tokens are issued, and statuses/comments need a valid one."""
        self.app = App(app_id, public_key, installations)
        return self.app

    def serve_git(self, root: Path) -> None:
        """Serve the bare repositories under ``root`` at ``{url}/git/<name>.git``."""
        self.git_root = root

    def revoke(self, token: str) -> None:
        assert self.app is not None
        with self.lock:
            self.app.revoked.add(token)

    def statuses(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if "/statuses/" in r.path]

    def comments(self) -> list[Recorded]:
        """Pull-request comments created (POST) and edited (PATCH), in order."""
        with self.lock:
            return [r for r in self.requests if "/comments" in r.path]

    def token_requests(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith("/access_tokens")]

    def issued_tokens(self) -> list[str]:
        assert self.app is not None
        with self.lock:
            return list(self.app.issued)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ── checks, as GitHub makes them ──────────────────────────────────────────────────────

    def jwt_refusal(self, authorization: str | None) -> str | None:
        """Why the App JWT in ``authorization`` is refused, or None when it is good."""
        assert self.app is not None
        scheme, _, jwt = (authorization or "").partition(" ")
        parts = jwt.split(".")
        if scheme.lower() != "bearer" or len(parts) != 3:
            return BAD_JWT
        try:
            header, claims = (json.loads(_unb64(p)) for p in parts[:2])
            signature = _unb64(parts[2])
        except ValueError:
            return BAD_JWT
        if header.get("alg") != "RS256":
            return BAD_JWT
        try:
            self.app.public_key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return BAD_JWT
        if str(claims.get("iss")) != str(self.app.app_id):
            return f"Integration not found ({claims.get('iss')!r})"
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if not isinstance(iat, int) or not isinstance(exp, int) or iat > now + 60:
            return "'Issued at' claim ('iat') must be an Integer representing the time"
        if exp <= now or exp - iat > 600:
            return (
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires"
            )
        return None

    def token_refusal(self, authorization: str | None) -> str | None:
        """None when ``authorization`` carries an unexpired, unrevoked installation token."""
        if self.app is None:
            return None  # no App registered: personal tokens, not checked
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return BAD_CREDENTIALS
        return self._installation_token_refusal(token)

    def _installation_token_refusal(self, token: str) -> str | None:
        assert self.app is not None
        with self.lock:
            known = self.app.issued.get(token)
            if known is None or token in self.app.revoked or known[1] <= time.time():
                return BAD_CREDENTIALS
        return None

    def basic_refusal(self, authorization: str | None) -> str | None:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic" or self.app is None:
            return BAD_CREDENTIALS
        try:
            user, _, token = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return BAD_CREDENTIALS
        if user != "x-access-token":
            return BAD_CREDENTIALS
        return self._installation_token_refusal(token)

    def issue(self, installation: int) -> dict[str, Any]:
        assert self.app is not None
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = time.time() + self.app.token_seconds
        with self.lock:
            self.app.issued[token] = (installation, expires)
        at = datetime.fromtimestamp(int(expires), UTC).isoformat().replace("+00:00", "Z")
        return {
            "token": token,
            "expires_at": at,
            "permissions": {"statuses": "write", "issues": "write", "contents": "read"},
            "repository_selection": "selected",
        }


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def start_fake_github() -> FakeGitHub:
    holder: list[FakeGitHub] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, method: str) -> tuple[FakeGitHub, bytes]:
            fake = holder[0]
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            headers = {k.lower(): v for k, v in self.headers.items()}
            with fake.lock:
                fake.requests.append(Recorded(method, self.path, headers, body))
            return fake, raw

        def do_GET(self) -> None:
            if self.path.startswith("/git/"):
                self._git("GET", b"")
                return
            fake, _ = self._record("GET")
            parts = self.path.strip("/").split("/")
            if len(parts) == 4 and parts[0] == "repos" and parts[3] == "installation":
                if fake.app is None:
                    self._answer(404, {"message": "Not Found", "documentation_url": DOCS})
                    return
                refusal = fake.jwt_refusal(self.headers.get("Authorization"))
                if refusal is not None:
                    self._answer(401, {"message": refusal, "documentation_url": DOCS})
                    return
                full_name = f"{parts[1]}/{parts[2]}".lower()
                for installation, repo in fake.app.installations.items():
                    if repo.lower() == full_name:
                        self._answer(200, {"id": installation, "app_id": fake.app.app_id})
                        return
            self._answer(404, {"message": "Not Found", "documentation_url": DOCS})

        def do_PATCH(self) -> None:
            self.do_POST(method="PATCH")

        def do_POST(self, method: str = "POST") -> None:
            if self.path.startswith("/git/"):
                length = int(self.headers.get("Content-Length", "0"))
                self._git("POST", self.rfile.read(length))
                return
            fake, _ = self._record(method)
            parts = self.path.strip("/").split("/")
            if parts[:2] == ["app", "installations"] and parts[-1] == "access_tokens":
                self._access_tokens(fake, parts)
                return
            refusal = fake.token_refusal(self.headers.get("Authorization"))
            if refusal is not None:
                self._answer(401, {"message": refusal, "documentation_url": DOCS})
                return
            # Comments keep their id when edited (GitHub answers 200 with the comment).
            edited = method == "PATCH" and self.path.rsplit("/", 1)[-1].isdigit()
            comment_id = int(self.path.rsplit("/", 1)[-1]) if edited else 1000 + len(fake.requests)
            status = 200 if edited else fake.answer_status
            self._answer(status, {"id": comment_id} if status < 300 else {"message": "Failed"})

        def _access_tokens(self, fake: FakeGitHub, parts: list[str]) -> None:
            if fake.app is None:
                self._answer(404, {"message": "Not Found", "documentation_url": DOCS})
                return
            refusal = fake.jwt_refusal(self.headers.get("Authorization"))
            if refusal is not None:
                self._answer(401, {"message": refusal, "documentation_url": DOCS})
                return
            installation = int(parts[2]) if parts[2].isdigit() else -1
            if installation not in fake.app.installations:
                self._answer(404, {"message": "Not Found", "documentation_url": DOCS})
                return
            self._answer(201, fake.issue(installation))

        def _git(self, method: str, body: bytes) -> None:
            """git's smart HTTP through ``git http-backend`` (CGI), behind the token check."""
            fake = holder[0]
            refusal = fake.basic_refusal(self.headers.get("Authorization"))
            with fake.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append(Recorded(method, self.path, headers, {"refusal": refusal}))
            if fake.git_root is None or refusal is not None:
                data = b"Authentication failed\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            path, _, query = self.path[len("/git") :].partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(fake.git_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": method,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "x-access-token",
                "REMOTE_ADDR": "127.0.0.1",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_COUNT": "3",
                "GIT_CONFIG_KEY_0": "uploadpack.allowAnySHA1InWant",
                "GIT_CONFIG_VALUE_0": "true",
                "GIT_CONFIG_KEY_1": "uploadpack.allowFilter",
                "GIT_CONFIG_VALUE_1": "true",
                "GIT_CONFIG_KEY_2": "safe.directory",
                "GIT_CONFIG_VALUE_2": "*",
            }
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
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
