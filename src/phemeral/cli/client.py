"""The CLI's HTTP client for the Phemeral API, shared by every command that talks to a server.

`api_command` adds ``--url`` / ``--token`` / ``--data-dir`` / ``--json`` to a click command,
hands it an `ApiClient`, and turns errors into a message on stderr and a trustworthy exit code.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console

from phemeral import errors
from phemeral.settings import default_data_dir

DEFAULT_URL = "http://127.0.0.1:8000"
ERRORS: dict[str, type[errors.PhemeralError]] = {
    "config_error": errors.ConfigError,
    "detection_failed": errors.DetectionError,
    "not_found": errors.NotFound,
    "conflict": errors.Conflict,
    "invalid_input": errors.InvalidInput,
    "unauthorized": errors.Unauthorized,
    "bad_source": errors.SourceError,
    "build_failed": errors.BuildError,
    "service_failed": errors.ServiceFailure,
    "runtime_failure": errors.RuntimeFailure,
    "store_unavailable": errors.StoreUnavailable,
}

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class ApiClient:
    """Talks JSON to one server; raises `PhemeralError`s carrying the server's message."""

    def __init__(self, url: str, token: str | None, *, origin: str = "--token") -> None:
        self.url = url.rstrip("/")
        self.origin = origin
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=60.0)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, "/api" + path, **kwargs)
        except httpx.ConnectError as exc:
            raise errors.PhemeralError(
                f"cannot reach the Phemeral server at {self.url}: is `phemeral serve` running? "
                "(set --url or PHEMERAL_URL if it runs elsewhere)"
            ) from exc
        except httpx.HTTPError as exc:
            raise errors.PhemeralError(f"request to {self.url} failed: {exc}") from exc
        return self._result(response)

    def _result(self, response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            raise errors.PhemeralError(
                f"{self.url} answered HTTP {response.status_code}; is it a Phemeral server?"
            )
        message = str(error.get("message", "unknown error"))
        if response.status_code == 401:
            message += f" (token from {self.origin})"
        raise ERRORS.get(str(error.get("code")), errors.PhemeralError)(message)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return (
            self.request("POST", path, json=body, **kwargs)
            if body is not None
            else (self.request("POST", path, **kwargs))
        )

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def events(self, path: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """Server-sent events as ``(event, data)``; ``event`` is "message" unless named."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream(
                "GET", "/api" + path, params=params, timeout=httpx.Timeout(60.0, read=None)
            ) as response:
                if not response.is_success:
                    response.read()
                    self._result(response)
                event, data = "message", list[str]()
                for line in response.iter_lines():
                    if not line:
                        if data:
                            yield event, json.loads("\n".join(data))
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
        except httpx.ConnectError as exc:
            raise errors.PhemeralError(
                f"cannot reach the Phemeral server at {self.url}: is `phemeral serve` running?"
            ) from exc


def client_for(url: str, token: str | None, data_dir: Path | None) -> ApiClient:
    """``--token`` / ``PHEMERAL_TOKEN``, else the admin token file of the (local) data dir."""
    if token:
        return ApiClient(url, token)
    directory = data_dir or default_data_dir(os.environ)
    path = directory / "admin-token"
    try:
        file_token = path.read_text().strip()
    except OSError:
        file_token = None
    return ApiClient(url, file_token, origin=str(path) if file_token else "nowhere")


@dataclass
class Cli:
    api: ApiClient
    json: bool

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        if self.json:
            click.echo(json.dumps(data, indent=2))
        else:
            human()


def api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Decorate a click command body taking ``cli: Cli`` first."""

    @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
    @click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="PHEMERAL_DATA_DIR",
        help="Where the admin token is read from (when no --token).",
    )
    @click.option("--token", envvar="PHEMERAL_TOKEN", help="API token (default: admin-token).")
    @click.option("--url", envvar="PHEMERAL_URL", default=DEFAULT_URL, show_default=True)
    @functools.wraps(func)
    def wrapper(
        url: str, token: str | None, data_dir: Path | None, as_json: bool, **kwargs: Any
    ) -> None:
        cli = Cli(api=client_for(url, token, data_dir), json=as_json)
        try:
            func(cli, **kwargs)
        except errors.PhemeralError as exc:
            fail(exc, as_json)

    return wrapper


def fail(exc: errors.PhemeralError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}), err=True)
    else:
        err.print(f"[bold red]error:[/] {exc.message}", markup=True)
    sys.exit(exc.exit_code)


STATUS_STYLE = {"building": "yellow", "successful": "green", "failed": "red"}


def status_text(status: str, current: bool = False) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/]" + (" [bold cyan](current)[/]" if current else "")
