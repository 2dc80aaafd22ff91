"""Custom domains (full host names attached to one environment) and their certificates.

A domain is attached to exactly one environment; attaching it is what allows a certificate to be
requested for it (never a Host header). The certificate manager (`phemeral.tls.manager`) writes
issued certificates here; `publish_certificates` hands every servable one to the router.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from phemeral.deploys.plane import ControlPlane, find_environment, now
from phemeral.deploys.routing import publish
from phemeral.errors import Conflict, InvalidInput, NotFound
from phemeral.models import TlsCertificate
from phemeral.store.names import check_custom_domain, default_domain
from phemeral.store.schema import CustomDomain, Environment, Project
from phemeral.store.views import get_project, iso
from phemeral.tls import renewal

log = logging.getLogger("phemeral.deploys")

MAX_HSTS_AGE = 2 * 365 * 86400


def cert_facts(row: CustomDomain) -> renewal.CertFacts:
    return renewal.CertFacts(
        not_after=row.cert_not_after,
        failures=row.cert_failures,
        next_try_at=row.cert_next_try_at,
        renew_now=row.cert_renew_now,
    )


def domain_view(
    row: CustomDomain, project: str, environment: str, target: str, at: datetime
) -> dict[str, Any]:
    """The JSON shape of a custom domain (API, CLI, dashboard)."""
    facts = cert_facts(row)
    return {
        "name": row.name,
        "project": project,
        "environment": environment,
        "created_at": iso(row.created_at),
        "dns": {"type": "CNAME", "name": row.name, "value": target},
        "certificate": {
            "state": renewal.state(facts, at),
            "not_after": iso(row.cert_not_after),
            "issued_at": iso(row.cert_issued_at),
            "last_error": row.cert_last_error,
            "failures": row.cert_failures,
            "next_try_at": iso(_next_try(facts, at)),
            "warning": renewal.warning(facts, at),
        },
    }


def _next_try(facts: renewal.CertFacts, at: datetime) -> datetime | None:
    when = renewal.next_due(facts)
    if when is None:
        return at if renewal.is_due(facts, at) else None
    return when


def _views(cp: ControlPlane, s: Session, rows: list[CustomDomain]) -> list[dict[str, Any]]:
    at = now()
    views = []
    for row in rows:
        env = s.get(Environment, row.environment_id)
        assert env is not None
        project = s.get(Project, env.project_id)
        assert project is not None
        target = f"{default_domain(project.name, env.name)}.{cp.settings.base_domain}"
        views.append(domain_view(row, project.name, env.name, target, at))
    return views


def add_domain(cp: ControlPlane, name: str, project: str, environment: str) -> dict[str, Any]:
    """Attach ``name`` to the environment; its certificate is requested from then on."""
    name = check_custom_domain(name, cp.settings.base_domain)
    with cp.store.write() as s:
        env = find_environment(s, project, environment, lock=True)
        existing = s.get(CustomDomain, name)
        if existing is not None:
            raise Conflict(f"domain {name!r} is already attached to an environment")
        row = CustomDomain(
            name=name,
            environment_id=env.id,
            created_at=now(),
            cert_failures=0,
            cert_renew_now=False,
        )
        s.add(row)
        s.flush()
        view = _views(cp, s, [row])[0]
    publish(cp)
    _wake(cp)
    return view


def remove_domain(cp: ControlPlane, name: str) -> None:
    """Detach ``name``: it stops routing, and its certificate is no longer served or renewed."""
    name = name.strip().lower().rstrip(".")
    with cp.store.write() as s:
        row = s.get(CustomDomain, name)
        if row is None:
            raise NotFound(f"no custom domain {name!r}")
        s.delete(row)
    publish(cp)
    publish_certificates(cp)


def list_domains(cp: ControlPlane, project: str | None = None) -> list[dict[str, Any]]:
    with cp.store.read() as s:
        query = select(CustomDomain).join(
            Environment, Environment.id == CustomDomain.environment_id
        )
        if project is not None:
            proj = get_project(s, project)
            query = query.where(Environment.project_id == proj.id)
        rows = list(s.scalars(query.order_by(CustomDomain.name)))
        return _views(cp, s, rows)


def get_domain(cp: ControlPlane, name: str) -> dict[str, Any]:
    name = name.strip().lower().rstrip(".")
    with cp.store.read() as s:
        row = s.get(CustomDomain, name)
        if row is None:
            raise NotFound(f"no custom domain {name!r}")
        return _views(cp, s, [row])[0]


def renew_domain(cp: ControlPlane, name: str) -> dict[str, Any]:
    """Ask for a new certificate now (the current one keeps serving meanwhile)."""
    name = name.strip().lower().rstrip(".")
    with cp.store.write() as s:
        row = s.get(CustomDomain, name)
        if row is None:
            raise NotFound(f"no custom domain {name!r}")
        row.cert_renew_now = True
        row.cert_next_try_at = None
        view = _views(cp, s, [row])[0]
    _wake(cp)
    return view


def set_https(
    cp: ControlPlane,
    project: str,
    environment: str,
    *,
    https_redirect: bool | None = None,
    hsts_max_age: int | None = None,
) -> None:
    """Per-environment HTTPS settings: redirect plain HTTP once certified, HSTS max-age."""
    if hsts_max_age is not None and not 0 <= hsts_max_age <= MAX_HSTS_AGE:
        raise InvalidInput(f"hsts max-age must be between 0 and {MAX_HSTS_AGE} seconds")
    with cp.store.write() as s:
        env = find_environment(s, project, environment, lock=True)
        if https_redirect is not None:
            env.https_redirect = https_redirect
        if hsts_max_age is not None:
            env.hsts_max_age = hsts_max_age
    publish(cp)


def servable_certificates(cp: ControlPlane, at: datetime) -> list[TlsCertificate]:
    """Every certificate the router may serve now: the operator's, and unexpired issued ones."""
    certificates = []
    if cp.wildcard is not None and at < cp.wildcard.not_after:
        certificates.append(cp.wildcard)
    with cp.store.read() as s:
        rows = s.scalars(select(CustomDomain).where(CustomDomain.cert_chain.is_not(None)))
        for row in rows:
            if row.cert_not_after is None or at >= row.cert_not_after or row.cert_key is None:
                continue
            assert row.cert_chain is not None
            certificates.append(
                TlsCertificate(
                    names=(row.name,),
                    chain_pem=row.cert_chain.encode(),
                    key_pem=cp.box.decrypt(row.cert_key).encode(),
                    not_after=row.cert_not_after,
                )
            )
    return certificates


def publish_certificates(cp: ControlPlane) -> None:
    """Hand the servable certificates to every TLS listener (the router)."""
    if not cp.tls_listeners:
        return
    certificates = servable_certificates(cp, now())
    for listener in list(cp.tls_listeners):
        try:
            listener.set_certificates(certificates)
        except Exception:
            log.exception("certificate listener failed")


def _wake(cp: ControlPlane) -> None:
    if cp.certificates_changed is not None:
        cp.certificates_changed()
