"""The dashboard in a real browser (headless Chromium from Debian, driven by Playwright) against
a real `phemeral serve`: sign in, deploy an example, watch its build log arrive live, page
through its runtime logs and follow them, promote an older deployment and see the environment
domain switch. Screenshots of the main pages land in test-output/screenshots/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from phemeral.models import LogStream, RuntimeLogLine
from phemeral.store import Store
from phemeral.store.logs import LogWriter

from .harness import REPO, SCREENSHOTS, Server, tar_gz, upload, wait_finished

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The example deployed end to end; a FastAPI one keeps the build small.
EXAMPLE_CANDIDATES = ("fastapi-uv", "fastapi-pip", "fastapi", "flask-pip", "flask")


def example_dir() -> Path:
    """An example from examples/ (DASHBOARD_TEST_EXAMPLE names another project to deploy)."""
    if os.environ.get("DASHBOARD_TEST_EXAMPLE"):
        return Path(os.environ["DASHBOARD_TEST_EXAMPLE"])
    examples = REPO / "examples"
    for name in EXAMPLE_CANDIDATES:
        if (examples / name).is_dir():
            return examples / name
    found = sorted(p for p in examples.glob("*") if p.is_dir()) if examples.is_dir() else []
    if not found:
        pytest.fail("examples/ has no project to deploy")
    return found[0]


def cli_deploy(server: Server, source: Path, project: str) -> dict[str, Any]:
    """`phemeral deploy` as people run it (upload, do not wait), returning its JSON."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "phemeral",
            "deploy",
            str(source),
            "--project",
            project,
            "--no-wait",
            "--json",
            "--url",
            server.api_url,
            "--token",
            server.token,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def via_router(server: Server, url: str, path: str = "/") -> httpx.Response:
    """A request to a deployment or environment domain through the one public port."""
    host = httpx.URL(url).host
    return httpx.get(
        f"http://127.0.0.1:{server.port}{path}",
        headers={"Host": f"{host}:{server.port}"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def context(browser: Any, server: Server) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def page(context: Any, server: Server) -> Any:
    """A signed-in page; signing in is itself the first thing tested."""
    p = context.new_page()
    problems: list[str] = []
    p.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: problems.append(str(e)))
    p.__dict__["problems"] = problems  # read by test_no_console_errors
    p.goto(server.dashboard_url + "/")
    assert p.url.startswith(server.dashboard_url + "/login")
    shot(p, "01-sign-in")
    p.get_by_label("Token").fill("not-the-token")
    p.get_by_role("button", name="Sign in").click()
    assert p.get_by_role("alert").inner_text() == "That token is not valid."
    p.get_by_label("Token").fill(server.token)
    p.get_by_role("button", name="Sign in").click()
    p.wait_for_url(server.dashboard_url + "/projects")
    assert p.get_by_role("heading", name="Projects").is_visible()
    problems.clear()  # the refused sign-in above was answered 401 on purpose
    return p


@pytest.fixture(scope="module")
def project(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    source = tmp_path_factory.mktemp("example") / "app"
    shutil.copytree(example_dir(), source, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    return f"demo-{uuid.uuid4().hex[:5]}", source


@pytest.fixture(scope="module")
def deployed(page: Any, server: Server, project: tuple[str, Path]) -> dict[str, dict[str, Any]]:
    """Deploy the example twice and watch the second build's log arrive live on its page.

    The server builds one deployment at a time, so the second waits queued behind the first
    and its page is open before its build starts.
    """
    name, source = project
    older = cli_deploy(server, source, name)
    watched = cli_deploy(server, source, name)
    page.goto(f"{server.dashboard_url}/deployments/{watched['id']}")
    log = page.locator("#build-log")
    assert log.get_attribute("data-live") == "true", "the build finished before the page opened"
    # lines the server did not render arrive over SSE, appended without a reload
    page.evaluate("window.__notReloaded = true")
    before = page.locator("#build-log ol.log li").count()
    page.wait_for_function(
        "n => document.querySelectorAll('#build-log ol.log li').length > n"
        " && window.__notReloaded === true",
        arg=before,
        timeout=120_000,
    )
    stages = page.locator("#build-log details.stage").count()
    shot(page, "03-build-log-live")
    # when the build ends, the page reloads itself with the final status
    page.wait_for_function(
        "() => window.__notReloaded === undefined && !!document.querySelector('#status .badge')",
        timeout=300_000,
    )
    status = page.locator("#status .badge").first.inner_text()
    with server.api() as api:
        final = {
            "older": wait_finished(api, str(older["id"])),
            "watched": wait_finished(api, str(watched["id"])),
        }
    if status != "successful":
        shot(page, "03-build-failed")
    assert status == final["watched"]["status"] == "successful", final["watched"]
    assert final["older"]["status"] == "successful", final["older"]
    assert page.locator("details.stage").count() >= max(stages, 3)
    assert page.locator("details.stage.failed").count() == 0
    shot(page, "04-deployment")
    return final


@pytest.fixture(scope="module")
def first(deployed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The deployment that is current after both builds (the one watched live)."""
    return deployed["watched"]


def test_sign_in_lands_on_projects(page: Any, server: Server) -> None:
    page.goto(server.dashboard_url + "/projects")
    assert page.get_by_role("heading", name="Projects").is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    shot(page, "02-projects")


def test_projects_and_project_page(page: Any, server: Server, first: dict[str, Any]) -> None:
    page.goto(server.dashboard_url + "/projects")
    page.get_by_role("link", name=first["project"]).click()
    assert page.get_by_role("heading", name=first["project"], level=1).is_visible()
    assert page.get_by_text("Applies to new deployments only").is_visible()
    assert page.get_by_role("link", name=first["id"]).first.is_visible()
    shot(page, "02-project-page")
    page.get_by_role("link", name="All deployments →").click()
    page.get_by_label("Status").select_option("successful")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=successful"))
    assert page.get_by_role("link", name=first["id"]).is_visible()
    shot(page, "02-deployments")
    page.goto(f"{server.dashboard_url}/projects/{first['project']}")
    page.set_viewport_size({"width": 360, "height": 780})
    shot(page, "02-project-360px")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at 360 px ({width} px wide)"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_deployment_page_links_its_url_and_serves(
    page: Any, server: Server, first: dict[str, Any]
) -> None:
    page.goto(f"{server.dashboard_url}/deployments/{first['id']}")
    link = page.locator("#deployment-url")
    assert link.get_attribute("href") == first["url"]
    assert via_router(server, first["url"]).status_code == 200
    assert page.get_by_text(first["start_command"]).first.is_visible()


def write_runtime_lines(
    server: Server, deployment_id: str, lines: list[tuple[LogStream, str]]
) -> None:
    """Runtime log lines through the store's log writer, the sink the runtime itself writes to
    (same SQLite database as the running server)."""
    store = Store.connect(f"sqlite:///{server.data_dir / 'phemeral.db'}")
    writer = LogWriter(store, runtime_log_cap=20_000)
    try:
        writer.write(
            [
                RuntimeLogLine(deployment_id, "web-1", stream, datetime.now(UTC), message)
                for stream, message in lines
            ]
        )
        writer.flush()
    finally:
        store.close()


def test_runtime_log_pages_filters_and_follow(
    page: Any, server: Server, first: dict[str, Any]
) -> None:
    """Paging newer/older, the stream and text filters and live follow, over lines the runtime's
    sink stored (independent of the router)."""
    tag = uuid.uuid4().hex[:6]
    streams: tuple[LogStream, ...] = ("stdout", "stderr", "stdout", "system")
    write_runtime_lines(
        server, first["id"], [(streams[n % 4], f"{tag} line {n:02d}") for n in range(30)]
    )
    page.goto(f"{server.dashboard_url}/deployments/{first['id']}?q={tag}&limit=10#runtime-logs")

    def top() -> str:
        return str(page.locator("#runtime-lines tr").first.inner_text())

    assert page.locator("#runtime-lines tr").count() == 10
    assert f"{tag} line 29" in top()
    assert page.get_by_role("link", name="« Newer").count() == 0
    page.get_by_role("link", name="Older »").click()
    assert f"{tag} line 19" in top()
    page.get_by_role("link", name="Older »").click()
    assert f"{tag} line 09" in top()
    assert page.get_by_role("link", name="Older »").count() == 0
    shot(page, "05-runtime-logs-oldest-page")
    page.get_by_role("link", name="« Newer").click()
    assert f"{tag} line 19" in top()
    page.get_by_role("link", name="« Newer").click()
    assert f"{tag} line 29" in top()

    page.get_by_label("Stream").select_option("stderr")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"stream=stderr"))
    cells = page.locator("#runtime-lines tr td:nth-child(2)").all_inner_texts()
    assert cells and set(cells) == {"stderr"}
    assert f"{tag} line 29" in top()  # 29 % 4 == 1: stderr
    shot(page, "05-runtime-logs")

    page.goto(f"{server.dashboard_url}/deployments/{first['id']}?q={tag}#runtime-logs")
    page.evaluate("window.__notReloaded = true")
    page.get_by_role("button", name="Follow live").click()
    assert page.get_by_role("button", name="Stop following").get_attribute("aria-pressed") == (
        "true"
    )
    page.locator("#follow[data-state=ready]").wait_for()  # following from the newest line
    write_runtime_lines(server, first["id"], [("stdout", f"{tag} arrived live <b>x</b>")])
    page.wait_for_function(
        "text => document.querySelector('#runtime-lines tr')?.innerText.includes(text)"
        " && window.__notReloaded === true",
        arg=f"{tag} arrived live",
    )
    assert "<b>x</b>" in top()  # shown as text, never parsed as markup
    page.get_by_role("button", name="Stop following").click()


def env_domain(server: Server, name: str) -> tuple[str, str | None]:
    with server.api() as api:
        env = api.get(f"/api/projects/{name}/environments").json()["items"][0]
    return env["domains"][0]["url"], env["current_deployment_id"]


def test_promote_an_older_deployment_from_the_environment_page(
    page: Any, server: Server, project: tuple[str, Path], deployed: dict[str, dict[str, Any]]
) -> None:
    name, _ = project
    older, newer = deployed["older"], deployed["watched"]
    assert env_domain(server, name)[1] == newer["id"]

    page.goto(f"{server.dashboard_url}/projects/{name}/environments/production")
    assert page.locator("#current-id").inner_text() == newer["id"]
    page.get_by_role("link", name=f"Make {older['id']} current").click()
    assert page.get_by_role("heading", name=re.compile("current\\?")).is_visible()
    shot(page, "06-confirm-promote")
    page.get_by_label("Why (kept in the history)").fill("roll back from the browser test")
    page.get_by_role("button", name="Confirm: make current").click()
    page.wait_for_url(re.compile(r"/environments/production\?notice=promoted$"))
    assert page.locator("#current-id").inner_text() == older["id"]
    history = page.locator("table").first.inner_text()
    assert "roll back from the browser test" in history
    assert newer["id"] in history and older["id"] in history
    shot(page, "07-environment")
    assert env_domain(server, name)[1] == older["id"]


def test_the_environment_domain_follows_the_promotion(
    page: Any, server: Server, project: tuple[str, Path], deployed: dict[str, dict[str, Any]]
) -> None:
    """After the promotion above, a request to the environment's domain is served by the
    older deployment: its access line lands in that deployment's runtime log, on its page."""
    name, _ = project
    url, current = env_domain(server, name)
    older, newer = deployed["older"], deployed["watched"]
    assert current == older["id"], "run after test_promote_an_older_deployment_…"
    probe = f"/probe-{uuid.uuid4().hex[:8]}"
    assert via_router(server, url, probe).status_code < 500
    with server.api() as api:
        deadline = time.monotonic() + 20
        while True:
            hits = {
                d["id"]: api.get(
                    f"/api/deployments/{d['id']}/logs/runtime", params={"q": probe}
                ).json()["lines"]
                for d in (older, newer)
            }
            if hits[older["id"]] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert hits[older["id"]] and not hits[newer["id"]]
    page.goto(f"{server.dashboard_url}/deployments/{older['id']}?q={probe[1:]}#runtime-logs")
    assert probe in page.locator("#runtime-lines").inner_text()


def test_redeploy_builds_the_same_source_again(
    page: Any, server: Server, deployed: dict[str, dict[str, Any]]
) -> None:
    older = deployed["older"]
    page.goto(f"{server.dashboard_url}/deployments/{older['id']}")
    page.get_by_role("button", name="Redeploy").click()
    page.wait_for_url(re.compile(r"/deployments/[a-z0-9]+$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != older["id"]
    with server.api() as api:
        new = wait_finished(api, new_id)
    assert new["status"] == "successful", new.get("failure_reason")
    assert (new["project"], new["environment"]) == (older["project"], older["environment"])
    assert new["trigger"]["by"] == "admin (dashboard)"


def test_works_with_javascript_off(
    browser: Any, server: Server, deployed: dict[str, dict[str, Any]]
) -> None:
    """Sign in, read every main page and submit forms with scripts disabled, on a phone-sized
    screen; only the live updates need JavaScript (their button is hidden without it)."""
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 360, "height": 740})
    try:
        p = ctx.new_page()
        p.goto(server.dashboard_url + "/projects")
        p.get_by_label("Token").fill(server.token)
        p.get_by_role("button", name="Sign in").click()
        p.wait_for_url(server.dashboard_url + "/projects")
        d = deployed["older"]
        p.goto(f"{server.dashboard_url}/projects/{d['project']}")
        p.get_by_label("Custom start command").fill("gunicorn --bind 0.0.0.0:$PORT app:app")
        p.get_by_role("button", name="Save settings").click()
        assert "applies to new deployments only" in p.get_by_role("status").inner_text()
        shot(p, "08-project-no-js-360px")
        p.goto(f"{server.dashboard_url}/deployments/{d['id']}")
        assert not p.get_by_role("button", name="Follow live").is_visible()
        assert p.evaluate("document.documentElement.scrollWidth") <= 360
        shot(p, "08-deployment-no-js-360px")
        p.goto(f"{server.dashboard_url}/projects/{d['project']}/environments/production")
        assert p.evaluate("document.documentElement.scrollWidth") <= 360
        shot(p, "08-environment-no-js-360px")
        p.get_by_role("button", name="Sign out").click()
        p.wait_for_url(re.compile("/login"))
    finally:
        ctx.close()
        with server.api() as api:
            api.patch(f"/api/projects/{deployed['older']['project']}", json={"start_command": None})


UNNAMED_CONTROLS = """() => {
  const named = (el) => {
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return true;
    if (el.id && document.querySelector(`label[for="${el.id}"]`)) return true;
    if (el.closest('label')) return true;
    return (el.innerText || el.value || '').trim().length > 0;
  };
  const controls = document.querySelectorAll(
    'a[href], button, select, textarea, input:not([type=hidden])');
  return [...controls].filter((el) => !el.hidden && !named(el)).map((el) => el.outerHTML);
}"""


def test_every_control_has_an_accessible_name(
    page: Any, server: Server, deployed: dict[str, dict[str, Any]]
) -> None:
    d = deployed["older"]
    for path in (
        "/projects",
        f"/projects/{d['project']}",
        f"/projects/{d['project']}/deployments",
        f"/projects/{d['project']}/environments/production",
        f"/deployments/{d['id']}",
        f"/deployments/{d['id']}/promote",
    ):
        page.goto(server.dashboard_url + path)
        assert page.evaluate(UNNAMED_CONTROLS) == [], path


def test_a_failed_build_highlights_and_opens_its_failing_stage(
    page: Any, server: Server, project: tuple[str, Path]
) -> None:
    name, _ = project
    with server.api() as api:
        d = upload(api, name, tar_gz({"main.py": "print('no framework here')\n"}), promote=False)
    page.goto(f"{server.dashboard_url}/deployments/{d['id']}")
    page.wait_for_function(
        "() => document.querySelector('#status .badge')?.innerText !== 'building'",
        timeout=120_000,
    )  # live: the page reloads itself when the build ends
    assert page.locator("#status .badge").first.inner_text() == "failed"
    failed = page.locator("details.stage.failed")
    assert failed.count() == 1
    assert failed.get_attribute("open") is not None
    assert failed.locator("li.err").count() >= 1
    assert page.get_by_role("alert").first.inner_text().startswith("Failed:")
    shot(page, "09-build-failed")


def test_no_console_errors(page: Any) -> None:
    """No script error, blocked resource or policy violation on any page visited above."""
    assert page.__dict__["problems"] == []
