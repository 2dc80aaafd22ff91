"""The dashboard over plain HTTP against a real server: sign-in, CSRF refusal, auth redirects,
escaping of user content, and the pages reading real data made through the real API."""

from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from markupsafe import escape
from platformkit import git

from phemeral.github.signature import sign

from .harness import REPO, Server, csrf_of, sign_in, tar_gz, upload, wait_finished

pytestmark = pytest.mark.slow

HOSTILE = '<script>alert("x")</script>'


def sse_events(
    client: httpx.Client, path: str, headers: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """The events of a server-sent event stream that ends by itself."""
    events: list[dict[str, str]] = []
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if event:
                    events.append(event)
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                if key != "retry":
                    event[key] = value
    return events


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def browser_like(server: Server) -> httpx.Client:
    client = server.anonymous()
    response = sign_in(client, server.token)
    assert response.status_code == 303
    return client


@pytest.fixture
def project(server: Server) -> str:
    name = _name("web")
    with server.api() as api:
        response = api.post("/api/projects", json={"name": name})
        assert response.status_code == 201, response.text
    return name


def test_pages_redirect_to_sign_in_and_back(server: Server) -> None:
    client = server.anonymous()
    for path in ("/", "/projects", "/projects/x", "/deployments/abc"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login"), path
    response = client.get("/projects/x?tab=1")
    assert response.headers["location"] == "/login?next=%2Fprojects%2Fx%3Ftab%3D1"
    response = sign_in(client, server.token, "/projects/x?tab=1")
    assert response.headers["location"] == "/projects/x?tab=1"
    # the live streams refuse strangers too
    assert server.anonymous().get("/deployments/abc/build-log/events").status_code == 401


def test_sign_in_refuses_wrong_tokens_and_forged_forms(server: Server) -> None:
    client = server.anonymous()
    form = client.get("/login")
    token = csrf_of(form.text)
    wrong = client.post("/login", data={"token": server.token + "x", "csrf_token": token})
    assert wrong.status_code == 401
    assert "That token is not valid." in wrong.text
    assert "phemeral_session" not in client.cookies

    stranger = server.anonymous()  # a post from another site carries no login cookie
    forged = stranger.post("/login", data={"token": server.token, "csrf_token": token})
    assert forged.status_code == 403
    assert "phemeral_session" not in stranger.cookies

    client.get("/login")
    good = sign_in(client, server.token)
    assert good.status_code == 303
    cookie = good.headers["set-cookie"].lower()
    assert "phemeral_session=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert client.get("/projects").status_code == 200


def test_forms_without_a_valid_csrf_token_change_nothing(
    server: Server, browser_like: httpx.Client, project: str
) -> None:
    for token in (None, "0" * 64):
        data = {"start_command": "evil serve", "root_dir": ""}
        if token:
            data["csrf_token"] = token
        response = browser_like.post(f"/projects/{project}/settings", data=data)
        assert response.status_code == 403
        assert "security token" in response.text
    with server.api() as api:
        assert api.get(f"/api/projects/{project}").json()["start_command"] is None
    # a token from another session is no good either
    other = server.anonymous()
    sign_in(other, server.token)
    foreign = csrf_of(other.get(f"/projects/{project}").text)
    response = browser_like.post(
        f"/projects/{project}/settings",
        data={"start_command": "evil serve", "csrf_token": foreign},
    )
    assert response.status_code == 403
    assert browser_like.post("/logout").status_code == 403
    assert browser_like.get("/projects").status_code == 200  # still signed in


def test_settings_form_saves_and_says_it_applies_to_new_deployments(
    server: Server, browser_like: httpx.Client, project: str
) -> None:
    page = browser_like.get(f"/projects/{project}")
    assert page.status_code == 200
    assert "Applies to new deployments only" in page.text
    response = browser_like.post(
        f"/projects/{project}/settings",
        data={
            "csrf_token": csrf_of(page.text),
            "start_command": "uvicorn app:app --port $PORT",
            "root_dir": "",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/projects/{project}?notice=saved"
    with server.api() as api:
        assert api.get(f"/api/projects/{project}").json()["start_command"] == (
            "uvicorn app:app --port $PORT"
        )
    page = browser_like.get(response.headers["location"])
    assert "Settings saved." in page.text
    assert 'value="uvicorn app:app --port $PORT"' in page.text
    # a refused value is explained on the same form, and nothing changes
    refused = browser_like.post(
        f"/projects/{project}/settings",
        data={
            "csrf_token": csrf_of(page.text),
            "start_command": "uvicorn app:app --port $PORT",
            "repo_url": "ftp://example.com/not-a-git-url",
        },
    )
    assert refused.status_code in (400, 422)
    assert 'role="alert"' in refused.text and "ftp://" in refused.text
    with server.api() as api:
        assert api.get(f"/api/projects/{project}").json()["repo_url"] is None
    # clearing it goes back to the autodetected default
    browser_like.post(
        f"/projects/{project}/settings",
        data={"csrf_token": csrf_of(page.text), "start_command": "  ", "root_dir": ""},
    )
    with server.api() as api:
        assert api.get(f"/api/projects/{project}").json()["start_command"] is None


def test_user_content_is_escaped(server: Server, browser_like: httpx.Client, project: str) -> None:
    page = browser_like.get(f"/projects/{project}")
    browser_like.post(
        f"/projects/{project}/settings",
        data={"csrf_token": csrf_of(page.text), "start_command": HOSTILE, "root_dir": ""},
    )
    page = browser_like.get(f"/projects/{project}")
    assert HOSTILE not in page.text
    assert str(escape(HOSTILE)) in page.text
    # and were anything to slip through, the policy lets no inline script run
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_signing_out_ends_the_session(server: Server, browser_like: httpx.Client) -> None:
    page = browser_like.get("/projects")
    response = browser_like.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    assert browser_like.get("/projects").status_code == 303


def test_the_projects_page_shows_a_page_at_a_time(
    server: Server, browser_like: httpx.Client
) -> None:
    base = _name("many")
    created = [f"{base}-{i:02d}" for i in range(51)]  # more than one page of 50
    with server.api() as api:
        for name in created:
            assert api.post("/api/projects", json={"name": name}).status_code == 201
        expected: list[str] = []
        cursor = None
        while True:
            body = api.get("/api/projects", params={"cursor": cursor, "limit": 500}).json()
            expected += [p["name"] for p in body["items"]]
            if not (cursor := body["next_cursor"]):
                break
    seen: list[str] = []
    pages: list[str] = []
    path = "/projects"
    while True:
        page = browser_like.get(path)
        assert page.status_code == 200, path
        names = re.findall(r'<h2><a href="/projects/([^"]+)">', page.text)
        assert 1 <= len(names) <= 50
        seen += names
        pages.append(page.text)
        found = re.search(r'<a href="\?([^"]+)" rel="next">', page.text)
        if found is None:
            break
        path = "/projects?" + html.unescape(found.group(1))
    assert seen == expected and set(created) <= set(seen)
    assert len(pages) >= 2 and 'rel="prev"' not in pages[0] and 'rel="prev"' in pages[1]
    previous = re.search(r'<a href="\?([^"]*)" rel="prev">', pages[1])
    assert previous is not None
    back = browser_like.get("/projects?" + html.unescape(previous.group(1)))
    first_names = re.findall(r'<h2><a href="/projects/([^"]+)">', pages[0])
    assert re.findall(r'<h2><a href="/projects/([^"]+)">', back.text) == first_names
    broken = browser_like.get("/projects", params={"cursor": "garbage!"})
    assert broken.status_code == 422 and "not valid" in broken.text  # an error page, not a 500


def test_unknown_things_are_404_pages(browser_like: httpx.Client) -> None:
    for path in ("/projects/nope-nope", "/deployments/zzzzzzzz", "/projects/nope/deployments"):
        response = browser_like.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text
        assert response.headers["content-type"].startswith("text/html")


def test_a_failed_build_shows_its_failing_stage(server: Server, browser_like: httpx.Client) -> None:
    name = _name("broken")
    archive = tar_gz({"README.md": "no python here\n", "notes/<b>bold</b>.txt": "x\n"})
    with server.api() as api:
        d = upload(api, name, archive)
        d = wait_finished(api, str(d["id"]))
    assert d["status"] == "failed"
    page = browser_like.get(f"/deployments/{d['id']}")
    assert page.status_code == 200
    assert 'class="badge badge-failed">failed</span>' in page.text
    assert 'class="stage failed"' in page.text
    assert "failed here" in page.text
    assert "<b>bold</b>" not in page.text  # file names reach the page escaped, if at all
    # the project, its deployments list (with filters) and environment pages read the same data
    listing = browser_like.get(f"/projects/{name}/deployments?status=failed")
    assert str(d["id"]) in listing.text
    assert (
        str(d["id"]) not in browser_like.get(f"/projects/{name}/deployments?status=successful").text
    )
    assert browser_like.get(f"/projects/{name}").status_code == 200
    env = browser_like.get(f"/projects/{name}/environments/production")
    assert env.status_code == 200
    assert "No successful deployments yet." in env.text
    # the live stream of a finished build: every line, each with its position, then the end
    with server.api() as api:
        lines = api.get(f"/api/deployments/{d['id']}/logs/build").json()["lines"]
    events = sse_events(browser_like, f"/deployments/{d['id']}/build-log/events")
    assert [json.loads(e["data"]) for e in events[:-1]] == lines
    assert events[-1] == {"event": "end", "data": '{"status": "failed"}'}
    resumed = sse_events(
        browser_like,
        f"/deployments/{d['id']}/build-log/events",
        headers={"Last-Event-ID": events[2]["id"]},
    )
    assert [json.loads(e["data"]) for e in resumed[:-1]] == lines[3:]
    # a failed upload keeps no source: redeploying it is refused with the reason, not an error
    assert 'action="/deployments/' + str(d["id"]) + '/redeploy"' not in page.text
    assert browser_like.post(f"/deployments/{d['id']}/redeploy").status_code == 403
    refused = browser_like.post(
        f"/deployments/{d['id']}/redeploy", data={"csrf_token": csrf_of(page.text)}
    )
    assert refused.status_code == 409
    assert "no longer kept" in refused.text


def test_webhook_secret_is_revealed_only_on_a_checked_post(
    server: Server, browser_like: httpx.Client
) -> None:
    name = _name("hooked")
    secret = "whsec-" + uuid.uuid4().hex
    with server.api() as api:
        response = api.post("/api/projects", json={"name": name, "webhook_secret": secret})
        assert response.status_code == 201, response.text
    page = browser_like.get(f"/projects/{name}")
    assert secret not in page.text
    assert "/api/webhooks/github" in page.text
    # a crafted link cannot make the page show a "secret" of its choosing
    assert "planted" not in browser_like.get(f"/projects/{name}?webhook_secret=planted").text
    refused = browser_like.post(f"/projects/{name}/webhook-secret", data={})
    assert refused.status_code == 403 and secret not in refused.text
    shown = browser_like.post(
        f"/projects/{name}/webhook-secret", data={"csrf_token": csrf_of(page.text)}
    )
    assert shown.status_code == 200
    assert secret in shown.text
    assert shown.headers["cache-control"] == "no-store"


def test_deployments_list_pages_older_and_newer(server: Server, browser_like: httpx.Client) -> None:
    name = _name("paged")
    with server.api() as api:
        ids = [str(upload(api, name, tar_gz({"README.md": f"{n}\n"}))["id"]) for n in range(3)]
        for deployment_id in ids:
            wait_finished(api, deployment_id)
    newest_first = list(reversed(ids))
    first = browser_like.get(f"/projects/{name}/deployments?limit=2")
    assert [i for i in newest_first if i in first.text] == newest_first[:2]
    assert "« Newer" not in first.text
    older_href = re.search(r'href="\?([^"]+)" rel="next"', first.text)
    assert older_href
    second = browser_like.get(f"/projects/{name}/deployments?" + html.unescape(older_href[1]))
    assert [i for i in newest_first if i in second.text] == newest_first[2:]
    assert 'rel="next"' not in second.text
    newer_href = re.search(r'href="\?([^"]*)" rel="prev"', second.text)
    assert newer_href
    back = browser_like.get(f"/projects/{name}/deployments?" + html.unescape(newer_href[1]))
    assert [i for i in newest_first if i in back.text] == newest_first[:2]


def test_a_push_deployment_shows_branch_commit_and_pusher(
    server: Server, browser_like: httpx.Client
) -> None:
    """A real push: a local repository, a signed delivery to the webhook, the pages after."""
    root = Path(tempfile.mkdtemp(prefix="phemeral-dash-repo-"))
    try:
        root.chmod(0o755)  # the build's app uid reads the repository
        repo = root / "app"
        shutil.copytree(REPO / "examples" / "fastapi-uv", repo)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "first release")
        sha = git(repo, "rev-parse", "HEAD")
        name, secret = _name("pushed"), "whsec-" + uuid.uuid4().hex
        with server.api() as api:
            created = api.post(
                "/api/projects",
                json={"name": name, "repo_url": str(repo), "webhook_secret": secret},
            )
            assert created.status_code == 201, created.text
        body = json.dumps(
            {
                "ref": "refs/heads/main",
                "before": "0" * 40,
                "after": sha,
                "created": True,
                "repository": {"full_name": "ada/app", "clone_url": str(repo)},
                "pusher": {"name": "ada"},
                "head_commit": {"id": sha, "message": "first release"},
            }
        ).encode()
        delivered = httpx.post(
            server.api_url + "/api/webhooks/github",
            content=body,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(secret, body),
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert delivered.status_code in (200, 201, 202), delivered.text
        with server.api() as api:
            items = api.get(f"/api/projects/{name}/deployments").json()["items"]
            assert len(items) == 1
            d = wait_finished(api, items[0]["id"])
        listing = browser_like.get(f"/projects/{name}/deployments")
        assert f"push to main by ada ({sha[:12]})" in listing.text
        page = browser_like.get(f"/deployments/{d['id']}")
        assert f"push to main by ada ({sha[:12]})" in page.text
        assert sha[:12] in page.text
        assert d["status"] == "successful", d.get("failure_reason")
        env = browser_like.get(f"/projects/{name}/environments/production")
        assert "push deployment succeeded" in env.text  # the automatic pointer move, with why
        assert "push by ada" in env.text
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_scaled_to_zero_deployment_reports_its_tier_idle_memory_and_expected_wake(
    server: Server, browser_like: httpx.Client
) -> None:
    """The API's ``instances`` and the dashboard's pages, from the real runtime: running after
    the boot check, then the template tier with its measured idle PSS once it scaled to zero."""
    files = {
        str(p.relative_to(REPO / "examples" / "fastapi-uv")): p.read_text()
        for p in sorted((REPO / "examples" / "fastapi-uv").rglob("*"))
        if p.is_file() and ".venv" not in p.parts and "__pycache__" not in p.parts
    }
    files["phemeral.toml"] = "idle_timeout = 1\n"
    name = _name("idle")
    with server.api() as api:
        created = upload(api, name, tar_gz(files))
        d = wait_finished(api, str(created["id"]))
        assert d["status"] == "successful", d.get("failure_reason")
        deadline = time.monotonic() + 60
        while True:
            instances = api.get(f"/api/deployments/{d['id']}").json()["instances"]
            if instances["tier"] == "template" and instances["idle_pss_kb"] > 0:
                break
            assert time.monotonic() < deadline, instances
            time.sleep(0.3)
    assert instances["state"] == "dormant" and instances["instances"] == 0
    assert instances["idle_pss_kb"] >= instances["idle_memory_kb"] > 1000
    assert instances["expected_wake_ms"] > 0
    page = browser_like.get(f"/deployments/{d['id']}").text
    wakes = re.search(r'<dd id="wakes-from">([^<]*)</dd>', page)
    idle = re.search(r'<dd id="idle-memory">([^<]*)</dd>', page)
    assert wakes and re.match(r"template tier, ~\d+ ms", html.unescape(wakes.group(1)))
    assert idle and re.match(r"\d+\.\d MiB \(PSS", html.unescape(idle.group(1)))
    env = browser_like.get(f"/projects/{name}/environments/production").text
    assert re.search(r"wakes from: template tier, ~\d+ ms[^·<]* · idle memory: \d+\.\d MiB", env)
