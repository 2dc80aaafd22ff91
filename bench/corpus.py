"""Deploy the real-repository corpus (`bench/corpus/repos.toml`) and report what serves.

    .venv/bin/python bench/corpus.py [--only NAME,NAME] [--jobs 2] [--out results.json]

Starts a real `phemeral serve` on an empty data dir, then for each repository: extracts its
snapshot at the listed commit into a cache folder outside the repository (`--work`, default
/tmp/phemeral-corpus), creates the project (with its root_dir and the env vars its README asks
for), runs `phemeral deploy FOLDER` as a user would, and GETs `/` (or the entry's health path)
through the platform's router. It prints, per repository: the detection, the outcome, the GET
status and the failure's first line; then the totals and how they compare with `expect`.

Snapshots: each repository is read from a git snapshot under `--mirror` (default /work/.mirror),
laid out as `{owner}+{name}/repo` (a bare git dir or a clone). A repository whose snapshot or
commit is not on the machine is skipped with a line saying so; bring it with any git clone of
`https://github.com/{owner}/{name}` into that path (`git clone --bare URL
/work/.mirror/{owner}+{name}/repo`) and run again.

Outcomes: ``serves`` (built, and the GET answered below 500, but not Django refusing the
host), ``boot-fail`` (built, but the GET did not answer, answered 5xx or refused the host),
``build-fail`` (the deployment failed; the reason's first line is printed), ``skipped``,
``bench-error`` (this script failed). Entries needing ``postgres``/``redis`` get the platform's
own service (`phemeral services create`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / "corpus" / "repos.toml"
BASE = "corpus.localhost"
# any answer below 500 means the app is up (an API without a `/` route answers 404 or 422),
# except a 400 that is Django refusing the host (ALLOWED_HOSTS)
_HOST_REFUSED = re.compile(r"DisallowedHost|Invalid HTTP_HOST")


@dataclass
class Entry:
    name: str
    repo: str
    commit: str
    kind: str = ""
    manager: str = ""
    layout: str = ""
    expect: str = "serves"
    root_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/"
    needs: list[str] = field(default_factory=list)
    why: str = ""


@dataclass
class Result:
    name: str
    repo: str
    expect: str
    outcome: str = "skipped"
    detection: str = ""
    status: int | None = None
    first_line: str = ""
    start_command: str = ""
    last_line: str = ""
    seconds: float = 0.0
    uploaded: str = ""


def load(path: Path) -> list[Entry]:
    data = tomllib.loads(path.read_text())
    return [Entry(**item) for item in data["repo"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git_dir(mirror: Path, repo: str) -> Path | None:
    base = mirror / repo.replace("/", "+") / "repo"
    for candidate in (base / ".git", base):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


_EXTRACT_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def extract(entry: Entry, mirror: Path, work: Path) -> Path | str:
    """The extracted tree (cached per repository and commit), or why it cannot be had.

    Snapshots may lack their largest files (≥ 4 MiB) and LFS content: those are left out and
    counted, the rest of the tree is written as the commit has it."""
    gd = git_dir(mirror, entry.repo)
    if gd is None:
        return f"no snapshot at {mirror / entry.repo.replace('/', '+')}/repo (see --help)"
    check = subprocess.run(
        ["git", "--git-dir", str(gd), "cat-file", "-e", f"{entry.commit}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if check.returncode != 0:
        return f"commit {entry.commit[:12]} is not in the snapshot {gd}"
    dest = work / f"{entry.repo.replace('/', '+')}-{entry.commit[:12]}"
    with _LOCKS_GUARD:
        lock = _EXTRACT_LOCKS.setdefault(dest, threading.Lock())
    with lock:
        if (dest / ".corpus-complete").is_file():
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        missing = _write_tree(gd, entry.commit, dest)
        (dest / ".corpus-complete").write_text(f"{entry.commit}\nmissing blobs: {missing}\n")
    return dest


def _write_tree(gd: Path, commit: str, dest: Path) -> int:
    """Write every blob of ``commit`` under ``dest``; returns how many were not in the snapshot."""
    listing = subprocess.run(
        ["git", "--git-dir", str(gd), "ls-tree", "-r", "-z", commit],
        capture_output=True, check=True,
    ).stdout.decode("utf-8", "surrogateescape")  # fmt: skip
    entries = []
    for item in listing.split("\0"):
        if not item:
            continue
        meta, _, path = item.partition("\t")
        mode, kind, sha = meta.split()
        if kind == "blob":
            entries.append((mode, sha, path))
    batch = subprocess.Popen(
        ["git", "--git-dir", str(gd), "cat-file", "--batch"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert batch.stdin is not None and batch.stdout is not None
    missing = 0
    for mode, sha, path in entries:
        batch.stdin.write(sha.encode() + b"\n")
        batch.stdin.flush()
        header = batch.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            missing += 1
            continue
        data = batch.stdout.read(int(header[2]))
        batch.stdout.read(1)
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            target.symlink_to(data.decode("utf-8", "surrogateescape"))
        else:
            target.write_bytes(data)
            if mode == "100755":
                target.chmod(0o755)
    batch.stdin.close()
    batch.wait()
    return missing


class Platform:
    """A real `phemeral serve` on an empty data dir."""

    def __init__(self, tmp: Path, extra: list[str]) -> None:
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "serve.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--base-domain", BASE, "--idle-timeout", "30", *extra],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"phemeral serve exited; see {self.log_path}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise SystemExit("phemeral serve did not answer within 90 s")
        self.token = (self.data_dir / "admin-token").read_text().strip()

    def cli(self, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "phemeral", *args, "--url", self.url],
            capture_output=True, text=True, check=False, timeout=timeout,
            env={**os.environ, "PHEMERAL_TOKEN": self.token},
        )  # fmt: skip

    def api(self, path: str) -> Any:
        answer = httpx.get(
            f"{self.url}/api{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )
        return answer.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def detect_line(tree: Path, entry: Entry) -> str:
    args = [sys.executable, "-m", "phemeral", "detect", str(tree), "--json"]
    if entry.root_dir:
        args += ["--root-dir", entry.root_dir]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    try:
        found = json.loads(done.stdout)
    except ValueError:
        text = (done.stderr or done.stdout).strip().splitlines()
        return "undetected: " + (text[-1][:100] if text else f"exit {done.returncode}")
    if "framework" not in found:
        return "undetected: " + str(found.get("error", found))[:100]
    return (
        f"{found['framework']} {found['entrypoint']} · {found['package_manager']} · "
        f"py{found['python_version']}"
    )


# What a repository declares for a platform (Procfile, phemeral.toml, other platforms' files):
# `--without-declarations` deploys each tree without them, as the platform did before it read them.
DECLARATION_FILES = (
    "Procfile",
    "phemeral.toml",
    "railway.json",
    "railway.toml",
    "render.yaml",
    "heroku.yml",
)


def without_declarations(tree: Path) -> Path:
    """A copy of ``tree`` without its declaration files (cached beside it)."""
    dest = tree.with_name(tree.name + "-undeclared")
    if not (dest / ".corpus-complete").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(
            tree, dest, symlinks=True, ignore=shutil.ignore_patterns(*DECLARATION_FILES)
        )
    return dest


def run_one(
    entry: Entry, platform: Platform, mirror: Path, work: Path, strip: bool = False
) -> Result:
    try:
        return _run_one(entry, platform, mirror, work, strip)
    except Exception as exc:
        result = Result(entry.name, entry.repo, entry.expect, outcome="bench-error")
        result.first_line = f"{type(exc).__name__}: {exc}"[:160]
        return result


def _run_one(
    entry: Entry, platform: Platform, mirror: Path, work: Path, strip: bool = False
) -> Result:
    result = Result(entry.name, entry.repo, entry.expect)
    started = time.monotonic()
    tree = extract(entry, mirror, work)
    if isinstance(tree, str):
        result.first_line = tree
        return result
    if strip:
        tree = without_declarations(tree)
    result.detection = detect_line(tree, entry)
    create = ["projects", "create", entry.name]
    if entry.root_dir:
        create += ["--root-dir", entry.root_dir]
    made = platform.cli(*create)
    if made.returncode != 0:
        result.outcome, result.first_line = "build-fail", _first(made.stderr or made.stdout)
        return result
    if entry.env:
        platform.cli("env", "set", entry.name, *(f"{k}={v}" for k, v in entry.env.items()))
    for kind in ("postgres", "redis"):
        if kind in entry.needs:  # the platform's own backing service, as its README asks
            made = platform.cli("services", "create", kind, "--project", entry.name)
            if made.returncode != 0:
                result.first_line = f"services create {kind}: " + _first(made.stderr or made.stdout)
    deployed = platform.cli("deploy", str(tree), "--project", entry.name, "--json")
    packed = next((ln for ln in deployed.stderr.splitlines() if ln.startswith("packed")), "")
    result.uploaded = packed
    try:
        body = json.loads(deployed.stdout)
    except ValueError:
        result.outcome = "build-fail"
        result.first_line = _first(deployed.stderr or deployed.stdout)
        result.seconds = time.monotonic() - started
        return result
    result.start_command = str(body.get("start_command") or "")
    if body.get("status") != "successful":
        result.outcome = "build-fail"
        reason = str(body.get("failure_reason") or body.get("status"))
        result.first_line = _first(reason)
        lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
        if len(lines) > 1 and lines[-1][:160] != result.first_line:
            result.last_line = lines[-1][:300]  # where the fix usually is
        result.seconds = time.monotonic() - started
        return result
    host = f"{body['id']}.{BASE}:{platform.port}"
    status, error, body_text = None, "", ""
    try:
        answer = httpx.get(
            f"http://127.0.0.1:{platform.port}{entry.health}",
            headers={"Host": host},
            timeout=90,
        )
        status = answer.status_code
        body_text = answer.text[:2000]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    result.status = status
    refused = None
    if status == 400:  # Django's ALLOWED_HOSTS says no: the app is up, but not for this host
        refused = next(
            (m for m in _runtime_messages(platform, body["id"]) if _HOST_REFUSED.search(m)), None
        )
        if refused is None and "<h1>Bad Request (400)</h1>" in body_text:
            refused = "Django answered Bad Request (400): the host is not in ALLOWED_HOSTS"
    if status is not None and status < 500 and refused is None:
        result.outcome = "serves"
    else:
        result.outcome = "boot-fail"
        result.first_line = (
            error or refused or _runtime_error(platform, body["id"]) or f"GET {status}"
        )[:160]
    result.seconds = time.monotonic() - started
    return result


def _first(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line[:160]
    return ""


def _runtime_messages(platform: Platform, deployment_id: str) -> list[str]:
    """The deployment's last 500 runtime lines, newest first (the API's order)."""
    try:
        lines = platform.api(f"/deployments/{deployment_id}/logs/runtime?limit=500")["lines"]
    except (httpx.HTTPError, KeyError, ValueError):
        return []
    return [str(line.get("message", "")).strip() for line in lines]


def _runtime_error(platform: Platform, deployment_id: str) -> str:
    messages = _runtime_messages(platform, deployment_id)  # newest first: the latest error
    for _ in range(5):  # a 500's traceback may reach the log a moment after the answer
        if any(_EXCEPTION_LINE.search(m) for m in messages):
            break
        time.sleep(1)
        messages = _runtime_messages(platform, deployment_id)
    for pattern in (_EXCEPTION_LINE, re.compile(r"error|exited", re.IGNORECASE)):
        for message in messages:
            if pattern.search(message):
                return message[:160]
    return messages[0][:160] if messages else ""


_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Invalid\w*|DisallowedHost)\b[^\n]*:")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    work = Path(tempfile.gettempdir()) / "phemeral-corpus"
    parser.add_argument("--work", type=Path, default=work)
    parser.add_argument("--only", default="", help="comma-separated names")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra serve option")
    parser.add_argument(
        "--without-declarations",
        action="store_true",
        help="deploy without Procfile, phemeral.toml and other platforms' files (the baseline)",
    )
    args = parser.parse_args()
    entries = load(args.corpus)
    if args.only:
        wanted = set(args.only.split(","))
        entries = [e for e in entries if e.name in wanted]
    args.work.mkdir(parents=True, exist_ok=True)
    # `timeout` (SIGTERM) ends the run like Ctrl-C: the platform is stopped, the results so far
    # are kept (--out is rewritten after every repository) and totalled.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="phemeral-corpus-run-") as tmp:
        platform = Platform(Path(tmp), args.serve_arg)
        pool = concurrent.futures.ThreadPoolExecutor(args.jobs)
        try:
            futures = [
                pool.submit(run_one, e, platform, args.mirror, args.work, args.without_declarations)
                for e in entries
            ]
            for future in futures:
                result = future.result()
                results.append(result)
                _print_row(result)
                if args.out:
                    args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))
        except KeyboardInterrupt:
            print(f"interrupted after {len(results)} of {len(entries)} repositories")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            platform.stop()
            if args.out:
                shutil.copy(platform.log_path, args.out.with_suffix(".serve.log"))
    _totals(results)
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))


def _print_row(r: Result) -> None:
    status = "-" if r.status is None else str(r.status)
    mark = "" if (r.outcome == "serves") == (r.expect == "serves") else "  (unexpected)"
    print(f"{r.name:30} {r.outcome:10} GET {status:>4}  {r.seconds:5.0f}s  {r.detection}{mark}")
    if r.start_command:
        print(f"{'':30} command: {r.start_command[:110]}")
    if r.first_line:
        print(f"{'':30} {r.first_line}")
    if r.last_line:
        print(f"{'':30} … {r.last_line}")
    sys.stdout.flush()


def _totals(results: list[Result]) -> None:
    ran = [r for r in results if r.outcome != "skipped"]
    serves = [r for r in ran if r.outcome == "serves"]
    expected = [r for r in ran if r.expect == "serves"]
    met = [r for r in expected if r.outcome == "serves"]
    print()
    print(
        f"serves {len(serves)}/{len(ran)} ({100 * len(serves) / max(1, len(ran)):.0f}%); "
        f"expected to serve {len(expected)}, of which {len(met)} do; "
        f"build-fail {sum(r.outcome == 'build-fail' for r in ran)}, "
        f"boot-fail {sum(r.outcome == 'boot-fail' for r in ran)}, "
        f"skipped {len(results) - len(ran)}"
    )


if __name__ == "__main__":
    main()
