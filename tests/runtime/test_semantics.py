"""What an app sees at run time, as its own server would give it: descriptors it opened at import
survive the fork, gunicorn's hooks run, no request it did not ask for, $PORT, WEB_CONCURRENCY,
its working directory. Real releases, real venvs, real (sandboxed when root) processes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from phemeral.runtime import procs
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import FASTAPI_APP, FLASK_APP, ListBuildLog, ListSink, make_release
from .harness import request, run_with_runtime, wait_until

pytestmark = pytest.mark.slow

# Opens a plain file and a SQLite database while it is imported; each request first opens (and
# keeps) a few descriptors of its own, which would take the numbers of the import-time ones if
# those had been closed after the fork, then writes through both import-time handles.
FD_APP_FLASK = """
import os, sqlite3
from flask import Flask

NOTES = open("/tmp/notes.txt", "a+", buffering=1)
DB = sqlite3.connect("/tmp/app.db", check_same_thread=False)
DB.execute("CREATE TABLE IF NOT EXISTS hits (n INTEGER)")
DB.commit()
HOGS = []
app = Flask(__name__)

@app.get("/write")
def write():
    HOGS.extend(open("/dev/null") for _ in range(4))
    NOTES.write("hit\\n")
    NOTES.flush()
    DB.execute("INSERT INTO hits VALUES (1)")
    DB.commit()
    with open("/tmp/notes.txt") as again:
        notes = again.read()
    check = sqlite3.connect("/tmp/app.db")
    rows = check.execute("SELECT count(*) FROM hits").fetchone()[0]
    ok = check.execute("PRAGMA integrity_check").fetchone()[0]
    check.close()
    return {"notes": notes, "rows": rows, "integrity": ok, "pid": os.getpid()}
"""

FD_APP_FASTAPI = FD_APP_FLASK.replace("from flask import Flask", "from fastapi import FastAPI")
FD_APP_FASTAPI = FD_APP_FASTAPI.replace("app = Flask(__name__)", "app = FastAPI()")


@pytest.mark.parametrize(
    ("stack", "files", "command"),
    [
        # --preload: gunicorn's own semantics are "import once, fork": the template's fork
        # must keep every descriptor the import opened.
        ("flask", {"app.py": FD_APP_FLASK}, "gunicorn --preload -b :$PORT app:app"),
        # uvicorn imports in the serving process: so does each server forked here.
        ("fastapi", {"main.py": FD_APP_FASTAPI}, None),
    ],
)
def test_descriptors_the_app_opened_at_import_survive_the_fork_and_writes_reach_their_file(
    stack: str,
    files: dict[str, str],
    command: str | None,
    tmp_path: Path,
    settings: Settings,
    sink: ListSink,
) -> None:
    release = make_release(tmp_path, f"fds-{stack}", stack, files=files, start_command=command)

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        for expected in (1, 2, 3):
            status, payload = await request(runtime, release.deployment_id, "/write")
            assert status == 200, payload
            answer = json.loads(payload)
            assert answer["notes"] == "hit\n" * expected
            assert answer["rows"] == expected
            assert answer["integrity"] == "ok"
        assert not any("disk I/O error" in m for m in sink.messages(release.deployment_id))

    run_with_runtime(settings, sink, body)


GUNICORN_CONF = """
import os, sys
workers = 2

def on_starting(server):
    server.log.info("hook on_starting")

def when_ready(server):
    print("hook when_ready", server.num_workers, flush=True)

def post_fork(server, worker):
    server.log.info("hook post_fork in %s", os.getpid())

def post_worker_init(worker):
    # One write: both workers print at once into one pipe, and print() with several arguments
    # writes each part apart when unbuffered (PYTHONUNBUFFERED), so two such lines interleave.
    sys.stdout.write(f"hook post_worker_init in {os.getpid()}\\n")
"""


def test_gunicorn_hooks_from_the_config_file_run_as_under_gunicorn(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path,
        "hooks-1",
        "flask",
        files={"app.py": FLASK_APP, "gunicorn.conf.py": GUNICORN_CONF},
        start_command="gunicorn --config gunicorn.conf.py --bind 0.0.0.0:$PORT app:app",
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        instance = runtime._deployments["hooks-1"].instance
        assert instance is not None and len(instance.pids) == 2  # workers = 2 in the file

        def lines(word: str) -> list[str]:
            return [m for m in sink.messages("hooks-1") if word in m]

        try:
            await wait_until(lambda: len(lines("hook post_worker_init")) >= 2)
            await wait_until(lambda: len(lines("hook post_fork")) >= 2)
        except AssertionError:
            print("\n".join(sink.messages("hooks-1")))  # what it said, for the report
            raise
        assert len(lines("hook post_worker_init")) == len(lines("hook post_fork")) == 2
        forked = {m.rsplit(" ", 1)[1] for m in lines("hook post_fork")}
        initialised = {m.rsplit(" ", 1)[1] for m in lines("hook post_worker_init")}
        assert len(forked) == 2 and forked == initialised  # once in each worker
        assert len(lines("hook on_starting")) == 1
        assert lines("hook when_ready") == ["hook when_ready 2"]

    run_with_runtime(settings, sink, body)


SEEN_APP = """
import os
from fastapi import FastAPI, Request
app = FastAPI()
OPENED = []

@app.middleware("http")
async def seen(request: Request, call_next):
    print("seen", request.url.path, flush=True)
    if request.url.path == "/health":
        OPENED.append(open("/tmp/warm-up-file", "w"))
    return await call_next(request)

@app.get("/")
def root():
    return {"pid": os.getpid()}

@app.get("/fds")
def fds():
    return {"targets": [os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
                        if os.path.exists(f"/proc/self/fd/{n}")]}

@app.get("/env")
def env(name: str):
    return {"value": os.environ.get(name), "cwd": os.getcwd()}
"""


def test_no_warm_up_request_unless_the_app_asks_for_one(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    quiet = make_release(tmp_path, "quiet-1", "fastapi", files={"main.py": SEEN_APP})
    warmed = make_release(
        tmp_path / "w",
        "warmed-1",
        "fastapi",
        files={"main.py": SEEN_APP},
        env={"PHEMERAL_WARMUP_PATH": "/health"},
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(quiet, ListBuildLog())
        await runtime.boot_check(warmed, ListBuildLog())
        for did in ("quiet-1", "warmed-1"):
            status, payload = await request(runtime, did, "/fds")
            assert status == 200
            # The warm-up ran in a throwaway child: what it opened is not in the template,
            # so no server forked from it has it.
            assert not any("warm-up-file" in t for t in json.loads(payload)["targets"])
        await wait_until(lambda: "seen /fds" in sink.messages("quiet-1", "stdout"))
        seen = [m for m in sink.messages("quiet-1", "stdout") if m.startswith("seen")]
        assert seen == ["seen /", "seen /fds"]  # the boot check's GET /, then ours
        warm = [m for m in sink.messages("warmed-1", "stdout") if m.startswith("seen")]
        assert warm[0] == "seen /health"

    run_with_runtime(settings, sink, body)


@pytest.mark.parametrize("shared", [False, True])
def test_port_is_the_listening_port_and_the_app_runs_in_its_directory(
    shared: bool, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path,
        "port-1",
        "fastapi",
        files={"main.py": SEEN_APP},
        lock_hash="L-port" if shared else None,
    )

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        upstream = await runtime.ensure_running("port-1")
        status, payload = await request(runtime, "port-1", "/env?name=PORT")
        assert status == 200
        answer = json.loads(payload)
        assert answer["value"] == str(upstream.port)
        assert answer["cwd"] == str(release.workdir)
        status, payload = await request(runtime, "port-1", "/env?name=PWD")
        assert json.loads(payload)["value"] == str(release.workdir)

    run_with_runtime(settings, sink, body)


@pytest.mark.parametrize("stack", ["flask", "fastapi"])
def test_web_concurrency_sets_the_worker_count(
    stack: str, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path, f"wc-{stack}", stack, env={"WEB_CONCURRENCY": "3"}, lock_hash=f"L-{stack}"
    )

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        await runtime.ensure_running(release.deployment_id)
        instance = runtime._deployments[release.deployment_id].instance
        assert instance is not None and len(instance.pids) == 3

    run_with_runtime(settings, sink, body)


DECLARED_GUNICORN_CONF = """
import os, sys
timeout = 45
def post_fork(server, worker):
    sys.stdout.write(f"post_fork {os.getpid()}\\n")  # one write (two workers, one pipe)
"""


@pytest.mark.parametrize(
    ("stack", "files", "command"),
    [
        (
            "flask",
            {"app.py": FLASK_APP, "gunicorn.conf.py": DECLARED_GUNICORN_CONF},
            "python -m gunicorn --workers 2 --timeout 30 --config gunicorn.conf.py app:app "
            "--bind 0.0.0.0:${PORT:-8000} --access-logfile -",
        ),
        (
            "fastapi+gunicorn",
            {"main.py": FASTAPI_APP, "gunicorn.conf.py": DECLARED_GUNICORN_CONF},
            "gunicorn -w 2 -k uvicorn.workers.UvicornWorker main:app --bind :$PORT",
        ),
        (
            "fastapi",
            {"web/main.py": FASTAPI_APP},
            "cd web && exec uvicorn main:app --host 0.0.0.0 --port ${PORT} --workers 2",
        ),
        (
            "fastapi+hypercorn",
            {"main.py": FASTAPI_APP},
            "hypercorn main:app --bind 0.0.0.0:$PORT --workers 2 --keep-alive 10",
        ),
    ],
)
def test_a_declared_server_command_with_options_wakes_through_the_template(
    stack: str,
    files: dict[str, str],
    command: str,
    tmp_path: Path,
    settings: Settings,
    sink: ListSink,
) -> None:
    release = make_release(
        tmp_path, "declared-1", stack, custom=True, start_command=command, files=files
    )
    assert release.app is None  # nothing detected: the command line alone says what to run

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        state = runtime.instances("declared-1")
        assert state.wake_path == "template"
        instance = runtime._deployments["declared-1"].instance
        assert instance is not None and len(instance.pids) == 2 and instance.template is not None
        await runtime._stop_instance(runtime._deployments["declared-1"], "idle")
        assert runtime.instances("declared-1").tier == "template"  # dormant, not gone
        status, payload = await request(runtime, "declared-1")
        assert status == 200 and json.loads(payload)["hello"] in ("flask", "fastapi")
        assert runtime.instances("declared-1").wake_path == "template"

    run_with_runtime(settings, sink, body)


def test_an_arbitrary_command_runs_as_given_and_says_so(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path,
        "script-1",
        "fastapi",
        custom=True,
        files={"main.py": FASTAPI_APP, "start.sh": "exec uvicorn main:app --port $PORT\n"},
        start_command="sh start.sh",
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        state = runtime.instances("script-1")
        assert state.wake_path == "command" and state.tier == "running"

    run_with_runtime(settings, sink, body)


WRITER_APP = """
import os, pathlib, sqlite3
from flask import Flask

HERE = pathlib.Path(__file__).resolve().parent
(HERE / "cache").mkdir(exist_ok=True)  # written while imported: the template's layer
(HERE / "cache" / "built.txt").write_text("at import")
app = Flask(__name__)

@app.get("/")
def root():
    return {"hello": "flask", "pid": os.getpid()}

@app.get("/write")
def write():
    (HERE / "logs").mkdir(exist_ok=True)
    with open(HERE / "logs" / "app.log", "a") as log:
        log.write("hit\\n")
    db = sqlite3.connect(HERE / "app.db")
    db.execute("CREATE TABLE IF NOT EXISTS hits (n INTEGER)")
    db.execute("INSERT INTO hits VALUES (1)")
    db.commit()
    rows = db.execute("SELECT count(*) FROM hits").fetchone()[0]
    db.close()
    return {"rows": rows, "log": (HERE / "logs" / "app.log").read_text(),
            "cache": (HERE / "cache" / "built.txt").read_text(), "cwd": os.getcwd()}
"""


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("overlay mounts need root")


@pytest.mark.root
@pytest.mark.parametrize("shared", [False, True])
def test_an_app_writes_next_to_its_code_in_a_throwaway_layer_of_each_instance(
    shared: bool, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    _root_only()
    release = make_release(
        tmp_path,
        "writer-1",
        "flask",
        files={"app.py": WRITER_APP},
        lock_hash="L-writer" if shared else None,
    )
    before = sorted(p.name for p in release.workdir.iterdir())

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        for expected in (1, 2):
            status, payload = await request(runtime, "writer-1", "/write")
            assert status == 200, payload
            answer = json.loads(payload)
            assert answer["rows"] == expected and answer["log"] == "hit\n" * expected
            assert answer["cache"] == "at import"
            assert answer["cwd"] == str(release.workdir)
        # The next instance starts from the template's view again: the first one's writes
        # were thrown away with it; what the import wrote is still there.
        await runtime._stop_instance(runtime._deployments["writer-1"], "idle")
        status, payload = await request(runtime, "writer-1", "/write")
        assert status == 200, payload
        assert json.loads(payload)["rows"] == 1
        assert json.loads(payload)["cache"] == "at import"

    run_with_runtime(settings, sink, body)
    # The release itself never changed, and nothing is left mounted or stored.
    assert sorted(p.name for p in release.workdir.iterdir()) == before
    assert str(settings.data_dir) not in Path("/proc/self/mountinfo").read_text()
    assert not (settings.data_dir / "runtime" / "views").exists()
    assert list((settings.data_dir / "runtime" / "runs").iterdir()) == []  # its run removed


def _template_processes(runtime: Runtime, deployment_id: str) -> list[int]:
    """The template processes (zygote.py run by python, not the sandbox's bwrap) of a
    deployment's template tree."""
    template = runtime._deployments[deployment_id].template
    assert template is not None and template.host_pid is not None
    zygote = str(runtime._zygote_path)
    tree = [template.host_pid, *procs.descendants(template.host_pid)]
    return [
        p
        for p in tree
        if p in procs.with_argument(zygote) and Path(f"/proc/{p}/comm").read_text() != "bwrap\n"
    ]


@pytest.mark.root
def test_a_dormant_deployment_alone_on_its_shared_template_keeps_one_template_process(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    _root_only()
    release = make_release(
        tmp_path,
        "alone-1",
        "flask",
        files={"app.py": WRITER_APP},
        lock_hash="L-alone",
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())  # forked from a shared template
        assert [s["deployments"] for s in runtime.shared_templates()] == [["alone-1"]]
        status, payload = await request(runtime, "alone-1", "/write")
        assert status == 200 and json.loads(payload)["rows"] == 1
        await runtime._stop_instance(runtime._deployments["alone-1"], "idle")
        # Dormant and alone on it: a template of its own replaces the shared one and the fork.
        await wait_until(lambda: runtime.shared_templates() == [], timeout=60)
        assert runtime.instances("alone-1").tier == "template"
        assert len(_template_processes(runtime, "alone-1")) == 1
        await wait_until(
            lambda: any("a template of its own" in m for m in sink.messages("alone-1", "system"))
        )
        # It serves as before: what its import wrote, a fresh layer per instance.
        for expected in (1, 2):
            status, payload = await request(runtime, "alone-1", "/write")
            assert status == 200, payload
            answer = json.loads(payload)
            assert (answer["rows"], answer["cache"]) == (expected, "at import")
            assert answer["cwd"] == str(release.workdir)
        await runtime._stop_instance(runtime._deployments["alone-1"], "idle")
        status, payload = await request(runtime, "alone-1", "/write")
        assert status == 200 and json.loads(payload)["rows"] == 1
        assert runtime.shared_templates() == []

    run_with_runtime(settings, sink, body)
    assert str(settings.data_dir) not in Path("/proc/self/mountinfo").read_text()


HOLDER_APP = """
import os, pathlib, sqlite3
from flask import Flask

HERE = pathlib.Path(__file__).resolve().parent
DB = sqlite3.connect(HERE / "app.db", check_same_thread=False)  # kept open from import
DB.execute("CREATE TABLE IF NOT EXISTS hits (n INTEGER)")
DB.commit()
app = Flask(__name__)

@app.get("/")
def root():
    return {"hello": "flask"}

@app.get("/write")
def write():
    DB.execute("INSERT INTO hits VALUES (1)")
    DB.commit()
    other = sqlite3.connect(HERE / "app.db")  # the same file, reopened by path
    rows = other.execute("SELECT count(*) FROM hits").fetchone()[0]
    other.execute("INSERT INTO hits VALUES (2)")
    other.commit()
    other.close()
    return {"rows": rows, "mine": DB.execute("SELECT count(*) FROM hits").fetchone()[0]}
"""


@pytest.mark.root
@pytest.mark.parametrize(
    ("command", "said"),
    [
        # Without --preload each server imports the app (its own connection, its own layer).
        ("gunicorn -b :$PORT app:app", "each server imports it after the fork"),
        # With --preload the template's connection is the servers': they share its layer.
        ("gunicorn --preload -b :$PORT app:app", "open from import"),
    ],
)
def test_a_database_opened_at_import_and_reopened_by_path_stays_one_file(
    command: str, said: str, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    _root_only()
    release = make_release(
        tmp_path, "holder-1", "flask", files={"app.py": HOLDER_APP}, start_command=command
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        status, payload = await request(runtime, "holder-1", "/write")
        assert status == 200, payload
        assert json.loads(payload) == {"rows": 1, "mine": 2}
        status, payload = await request(runtime, "holder-1", "/write")
        assert json.loads(payload) == {"rows": 3, "mine": 4}
        await wait_until(lambda: any(said in m for m in sink.messages("holder-1", "system")))

    run_with_runtime(settings, sink, body)
    assert not (release.workdir / "app.db").exists()


@pytest.mark.root
def test_a_command_run_as_given_writes_in_its_own_throwaway_layer(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    _root_only()
    release = make_release(
        tmp_path,
        "cmdwriter-1",
        "flask",
        custom=True,
        files={"app.py": WRITER_APP},
        start_command="echo started > started.txt; exec gunicorn -b 0.0.0.0:$PORT app:app",
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        assert runtime.instances("cmdwriter-1").wake_path == "command"
        status, payload = await request(runtime, "cmdwriter-1", "/write")
        assert status == 200, payload
        assert json.loads(payload)["rows"] == 1
        await runtime._stop_instance(runtime._deployments["cmdwriter-1"], "idle")
        status, payload = await request(runtime, "cmdwriter-1", "/write")
        assert json.loads(payload)["rows"] == 1

    run_with_runtime(settings, sink, body)
    assert not (release.workdir / "started.txt").exists()


SHARING_APP = """
import os, socket, threading, time
from flask import Flask

CONNECTION, PEER = socket.socketpair()  # as a database client's connection would be
TICKS = []
threading.Thread(target=lambda: [TICKS.append(time.sleep(0.01)) for _ in iter(int, 1)],
                 name="ticker", daemon=True).start()  # as a scheduler started at import would be
app = Flask(__name__)

@app.get("/")
def root():
    return {"pid": os.getpid(), "connection": os.fstat(CONNECTION.fileno()).st_ino,
            "ticking": any(t.name == "ticker" and t.is_alive() for t in threading.enumerate())}
"""


@pytest.mark.parametrize("preload", [False, True])
def test_connections_and_threads_opened_at_import_are_per_server_unless_preload(
    preload: bool, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    flag = "--preload " if preload else ""
    release = make_release(
        tmp_path,
        "sharing-1",
        "flask",
        files={"app.py": SHARING_APP},
        start_command=f"gunicorn {flag}-w 2 -b 0.0.0.0:$PORT app:app",
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        seen: dict[int, dict[str, object]] = {}
        # Without --preload each worker imports the app once it is forked: on a loaded box the
        # second may answer seconds after the first.
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            results = await asyncio.gather(*(request(runtime, "sharing-1") for _ in range(8)))
            for _, payload in results:
                answer = json.loads(payload)
                seen[answer["pid"]] = answer
        assert len(seen) == 2
        connections = {answer["connection"] for answer in seen.values()}
        ticking = [answer["ticking"] for answer in seen.values()]
        if preload:  # gunicorn --preload: one import, its connection shared, no threads
            assert len(connections) == 1 and ticking == [False, False]
        else:  # as gunicorn without --preload: each worker its own connection and thread
            assert len(connections) == 2 and ticking == [True, True]
        assert runtime.instances("sharing-1").wake_path == "template"

    run_with_runtime(settings, sink, body)


# Each request reports whether `wave` (standard library) and `helper` (the app's own module)
# were imported when it began, then imports both, as lazily imported modules are.
LAZY_APP_FASTAPI = """
import sys
from fastapi import FastAPI

app = FastAPI()

@app.get("/lazy")
def lazy():
    had = {"wave": "wave" in sys.modules, "helper": "helper" in sys.modules}
    import wave, helper
    return had
"""
LAZY_APP_FLASK = LAZY_APP_FASTAPI.replace("from fastapi import FastAPI", "from flask import Flask")
LAZY_APP_FLASK = LAZY_APP_FLASK.replace("app = FastAPI()", "app = Flask(__name__)")


@pytest.mark.parametrize("stack", ["fastapi", "flask"])
def test_what_a_server_imported_after_its_fork_the_next_fork_starts_with(
    stack: str, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    main = "main.py" if stack == "fastapi" else "app.py"
    app = LAZY_APP_FASTAPI if stack == "fastapi" else LAZY_APP_FLASK
    did = f"lazy-{stack}"
    release = make_release(tmp_path, did, stack, files={main: app, "helper.py": "X = 1\n"})

    async def body(runtime: Runtime) -> None:
        runtime.register(release, idle_timeout=0.05)
        status, payload = await request(runtime, did, "/lazy")
        assert status == 200
        assert json.loads(payload) == {"wave": False, "helper": False}
        dep = runtime._deployments[did]
        # Its server, stopped, told its template what it imported; the template imported it.
        await wait_until(lambda: runtime.instances(did).state == "dormant")
        await wait_until(lambda: "wave" in dep.learned_imports)
        assert "helper" not in dep.learned_imports  # the app's own code stays the server's
        status, payload = await request(runtime, did, "/lazy")
        assert status == 200
        assert json.loads(payload) == {"wave": True, "helper": False}

    run_with_runtime(settings, sink, body, share_templates=False)


def test_learned_imports_outlive_a_platform_restart(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    did = "lazy-restart"
    release = make_release(
        tmp_path, did, "fastapi", files={"main.py": LAZY_APP_FASTAPI, "helper.py": "X = 1\n"}
    )

    async def main() -> None:
        first = Runtime(settings, sink, share_templates=False)
        await first.start()
        try:
            first.register(release, idle_timeout=0.05)
            status, payload = await request(first, did, "/lazy")
            assert (status, json.loads(payload)) == (200, {"wave": False, "helper": False})
            await wait_until(lambda: first.instances(did).state == "dormant")
            await wait_until(lambda: "wave" in first._deployments[did].learned_imports)
        finally:
            await first.close()  # saves usage.json, learned imports included
        second = Runtime(settings, sink, share_templates=False)
        await second.start()
        try:
            second.register(release, idle_timeout=0.05)
            assert "wave" in second._deployments[did].learned_imports
            # Its first template after the restart imports them once the app is loaded.
            status, payload = await request(second, did, "/lazy")
            assert (status, json.loads(payload)) == (200, {"wave": True, "helper": False})
        finally:
            await second.close()

    asyncio.run(main())
