"""The data plane's Unix-socket protocol: frames, and the values that cross it as JSON.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (one object). Requests
carry ``op`` and, when they expect an answer, ``id``; answers carry ``re`` (the request's id) and
either ``ok`` (a value) or ``error`` (``{"type", "message"}``, rebuilt on the other side as the
same `phemeral.errors` class, so messages reach users intact). Long requests may send
``{"re": id, "log": [stage, message]}`` frames before their answer.

Everything here is pure: values in, values out.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from phemeral import errors
from phemeral.build.release import release_from_json, release_to_json
from phemeral.models import (
    DeploymentRoute,
    DeploymentStatus,
    HostPolicy,
    InstanceState,
    ProcessState,
    Release,
    RoutingSnapshot,
    RuntimeLogLine,
    TlsCertificate,
    Upstream,
)

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a routing snapshot of many thousand deployments fits

Message = dict[str, Any]


class FrameError(ValueError):
    """A peer sent something that is not a frame of this protocol."""


def frame(message: Message) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes is over the {MAX_FRAME} limit")
    return int(size)


def parse(body: bytes) -> Message:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise FrameError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


# -- values -------------------------------------------------------------------------------------


def snapshot_to_json(snapshot: RoutingSnapshot) -> Message:
    return {
        "base_domain": snapshot.base_domain,
        "deployments": {
            did: [route.status.value, route.project, route.environment]
            for did, route in snapshot.deployments.items()
        },
        "domains": dict(snapshot.domains),
        "custom_domains": dict(snapshot.custom_domains),
        "policies": {
            host: [policy.https_redirect, policy.hsts_max_age]
            for host, policy in snapshot.policies.items()
        },
    }


def snapshot_from_json(data: Message) -> RoutingSnapshot:
    return RoutingSnapshot(
        base_domain=str(data["base_domain"]),
        deployments={
            str(did): DeploymentRoute(DeploymentStatus(row[0]), str(row[1]), str(row[2]))
            for did, row in data["deployments"].items()
        },
        domains={str(k): (None if v is None else str(v)) for k, v in data["domains"].items()},
        custom_domains={
            str(k): (None if v is None else str(v))
            for k, v in data.get("custom_domains", {}).items()
        },
        policies={
            str(host): HostPolicy(https_redirect=bool(row[0]), hsts_max_age=int(row[1]))
            for host, row in data.get("policies", {}).items()
        },
    )


def certificate_to_json(cert: TlsCertificate) -> Message:
    """Private keys included: only ever sent over the data plane's private socket."""
    return {
        "names": list(cert.names),
        "chain_pem": cert.chain_pem.decode("ascii"),
        "key_pem": cert.key_pem.decode("ascii"),
        "not_after": cert.not_after.isoformat(),
    }


def certificate_from_json(data: Message) -> TlsCertificate:
    return TlsCertificate(
        names=tuple(str(n) for n in data["names"]),
        chain_pem=str(data["chain_pem"]).encode("ascii"),
        key_pem=str(data["key_pem"]).encode("ascii"),
        not_after=datetime.fromisoformat(data["not_after"]),
    )


def release_out(release: Release) -> Message:
    return release_to_json(release)


def release_in(data: Message) -> Release:
    return release_from_json(data)


def upstream_to_json(upstream: Upstream) -> Message:
    return {"host": upstream.host, "port": upstream.port, "unix_path": upstream.unix_path}


def upstream_from_json(data: Message) -> Upstream:
    return Upstream(host=str(data["host"]), port=int(data["port"]), unix_path=data["unix_path"])


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_when(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def state_to_json(state: InstanceState) -> Message:
    data = asdict(state)
    data["last_wake_at"] = _when(state.last_wake_at)
    data["processes"] = [{**asdict(p), "started_at": _when(p.started_at)} for p in state.processes]
    return data


def state_from_json(data: Message) -> InstanceState:
    known = {f.name for f in fields(InstanceState)}
    values = {k: v for k, v in data.items() if k in known}  # a newer peer's extra fields wait
    values["last_wake_at"] = _parse_when(values.get("last_wake_at"))
    values["processes"] = tuple(
        ProcessState(**{**p, "started_at": _parse_when(p.get("started_at"))})
        for p in values.get("processes") or ()
    )
    return InstanceState(**values)


def lines_to_json(lines: list[RuntimeLogLine]) -> list[list[str]]:
    return [
        [line.deployment_id, line.instance, line.stream, line.timestamp.isoformat(), line.message]
        for line in lines
    ]


def lines_from_json(rows: list[list[str]]) -> list[RuntimeLogLine]:
    return [
        RuntimeLogLine(str(d), str(i), s, datetime.fromisoformat(t), str(m))  # type: ignore[arg-type]
        for d, i, s, t, m in rows
    ]


# -- errors -------------------------------------------------------------------------------------

_ERRORS: dict[str, type[errors.PhemeralError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.PhemeralError)
}


def error_to_json(exc: BaseException) -> Message:
    if isinstance(exc, errors.PhemeralError):
        known = next(c for c in type(exc).__mro__ if _ERRORS.get(c.__name__) is c)
        return {"type": known.__name__, "message": exc.message}
    return {"type": "RuntimeFailure", "message": f"the data plane failed: {exc}"}


def error_from_json(data: Message) -> errors.PhemeralError:
    """The same class when it is one of ours (its nearest known base otherwise)."""
    cls = _ERRORS.get(str(data.get("type")), errors.RuntimeFailure)
    return cls(str(data.get("message", "")))
