"""GET /api/projects pages by name: each project once, in order, while projects are created
between pages; a malformed cursor or limit is a 422; one page costs the same number of SQL
statements whatever the number of projects."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert

from phemeral.api import create_app
from phemeral.api.auth import ensure_admin_token
from phemeral.deploys import ControlPlane, create_environment, create_project
from phemeral.deploys.domains import add_domain
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.cursor import PAGE_DEFAULT, PAGE_MAX, encode_cursor
from phemeral.store.logs import LogWriter
from phemeral.store.schema import Project

from .serverkit import Server, names_in_database_order, unique


def test_pages_cover_every_project_once_in_order_while_projects_are_created(
    server: Server, api: httpx.Client
) -> None:
    base = unique("m")
    for i in range(23):
        assert api.post("/projects", json={"name": f"{base}-{i:02d}"}).status_code == 201
    behind: list[str] = []  # created before the cursor's position: not on a later page
    ahead: list[str] = []  # created after it: on a later page
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        page = api.get("/projects", params={"limit": 5, "cursor": cursor}).json()
        assert set(page) == {"items", "next_cursor"}
        seen += [p["name"] for p in page["items"]]
        sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        step = len(sizes)
        behind.append(f"a-{base}-{step:02d}")  # sorts before every "m-…" and "z-…" name
        ahead.append(f"z-{base}-{step:02d}")  # after every name so far, this walk's included
        for name in (behind[-1], ahead[-1]):
            assert api.post("/projects", json={"name": name}).status_code == 201
    everything = names_in_database_order(server)
    assert seen == [n for n in everything if n not in behind]
    assert len(seen) == len(set(seen))
    assert set(ahead) <= set(seen) and not set(behind) & set(seen)
    assert all(size == 5 for size in sizes[:-1]) and 1 <= sizes[-1] <= 5
    # the first page by default is the default size; a page's items are the full view
    first = api.get("/projects").json()
    assert len(first["items"]) == min(PAGE_DEFAULT, len(everything))
    one = next(p for p in first["items"])
    assert one == api.get(f"/projects/{one['name']}").json()


def test_a_malformed_cursor_or_limit_is_a_422(api: httpx.Client) -> None:
    api.post("/projects", json={"name": unique("bad")})
    malformed = [
        {"cursor": "garbage!"},  # not base64 JSON
        {"cursor": "WzFd"},  # [1]: a number where a name belongs
        {"cursor": encode_cursor("a", "b")},  # a deployments cursor's shape
        {"limit": 0},
        {"limit": -5},
        {"limit": "many"},
    ]
    for params in malformed:
        response = api.get("/projects", params=params)
        assert response.status_code == 422, params
        error = response.json()["error"]
        assert error["code"] == "invalid_input", params
        assert ("cursor" if "cursor" in params else "limit") in error["message"], params
    assert api.get("/projects", params={"limit": 10**6}).status_code == 200  # lowered, not refused
    past_the_end = api.get("/projects", params={"cursor": encode_cursor("zzzz")}).json()
    assert past_the_end == {"items": [], "next_cursor": None}


# -- the cost of one page, counted in SQL statements (in process, real SQLite) ----------------


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    store = Store.connect(f"sqlite:///{tmp_path / 'phemeral.db'}")
    migrate(store)
    yield ControlPlane(
        settings=Settings(data_dir=tmp_path),
        store=store,
        box=SecretBox.open(tmp_path),
        logs=LogWriter(store, runtime_log_cap=100),
    )
    store.close()


class StatementCounter:
    """Every statement the engine sends (``before_cursor_execute``), BEGIN included."""

    def __init__(self, store: Store) -> None:
        self.statements: list[str] = []
        event.listen(store.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)


def add_projects(cp: ControlPlane, start: int, stop: int) -> None:
    """Projects like real ones: every third with a second environment and a custom domain, so
    a per-project or per-environment query would show in the count."""
    for i in range(start, stop):
        name = f"p{i:03d}"
        create_project(cp, name)
        if i % 3 == 0:
            create_environment(cp, name, "staging", ["dev"], [f"{name}-extra"])
            add_domain(cp, f"{name}.example.org", name, "staging")


def get_page(app: Any, token: str, params: dict[str, Any]) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://cp", headers=headers
        ) as client:
            response = await client.get("/api/projects", params=params)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

    return asyncio.run(ask())


def test_one_page_costs_the_same_statements_for_5_or_60_projects(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    token = ensure_admin_token(cp.store, tmp_path).read_text().strip()
    app = create_app(cp)
    get_page(app, token, {"limit": 1})  # the token checker's first load is not a page's cost
    counter = StatementCounter(cp.store)

    def cost(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        counter.statements.clear()
        page = get_page(app, token, params)
        return len(counter.statements), page

    add_projects(cp, 0, 5)
    few, page = cost({})
    assert len(page["items"]) == 5 and page["next_cursor"] is None
    add_projects(cp, 5, 60)
    many, page = cost({})
    assert len(page["items"]) == PAGE_DEFAULT and page["next_cursor"] is not None
    following, rest = cost({"cursor": page["next_cursor"]})
    assert [p["name"] for p in rest["items"]] == [f"p{i:03d}" for i in range(PAGE_DEFAULT, 60)]
    assert few == many == following, counter.statements
    # BEGIN, the page, environments, domains, custom domains
    assert many <= 5, counter.statements
    staging = next(e for e in page["items"][3]["environments"] if e["name"] == "staging")
    assert staging["custom_domains"] == ["p003.example.org"]
    assert [d["label"] for d in staging["domains"]] == ["p003-staging", "p003-extra"]

    # a limit above the largest page is lowered to it, at the same cost
    with cp.store.write() as s:
        s.execute(
            insert(Project),
            [
                {"name": f"q{i:03d}", "uid": 90_000 + i, "created_at": datetime.now(UTC)}
                for i in range(PAGE_MAX)
            ],
        )
    largest, page = cost({"limit": 10**6})
    assert len(page["items"]) == PAGE_MAX and page["next_cursor"] is not None
    assert largest == many, counter.statements
