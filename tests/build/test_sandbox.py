"""The sandbox really drops the uid, hides the host, and enforces its limits."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from phemeral import sandbox
from phemeral.sandbox import Cgroup, SandboxRefused, SandboxSpec

APP_UID = 20_077

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_pure_argv_orders_prlimit_bwrap_setpriv() -> None:
    spec = SandboxSpec(
        uid=20001,
        ro_binds=(Path("/srv/rel"), Path("/usr/lib/python3")),
        rw_binds=(Path("/srv/rel/.venv"),),
        env={"A": "1"},
    )
    tools = {"prlimit": "prlimit", "setpriv": "setpriv", "bwrap": "bwrap", "env": "env"}
    argv = sandbox.build_argv(
        ["app"], spec, root=True, use_bwrap=True, tools=tools, exists=lambda p: False
    )
    assert argv[0] == "prlimit"
    assert argv.index("bwrap") < argv.index("setpriv") < argv.index("app")
    assert "--unshare-user" not in argv  # privileged bwrap: the uid drop happens with setpriv
    assert "--unshare-net" in argv
    # /usr/lib/python3 is already visible through /usr: not bound twice
    assert "/usr/lib/python3" not in argv
    # the parent is bound before the child, so the child is not hidden
    assert argv.index("/srv/rel") < argv.index("/srv/rel/.venv")
    # no network: no /etc pieces for DNS/TLS
    assert "/etc/resolv.conf" not in argv


def test_root_without_uid_is_refused() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root is refused")
    with pytest.raises(SandboxRefused, match="root"):
        sandbox.wrap(["true"], SandboxSpec(uid=None))


@pytest.mark.root
@root_only
@pytest.mark.parametrize("use_bwrap", [True, False])
def test_runs_as_app_uid_and_writes_owned_files(tmp_path: Path, use_bwrap: bool) -> None:
    if use_bwrap and not sandbox.available():
        pytest.skip("bubblewrap unavailable")
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, APP_UID, APP_UID)
    for parent in work.parents:  # without bwrap the app uid must traverse the real path (0711)
        if parent != Path("/") and parent.stat().st_mode & 0o111 != 0o111:
            parent.chmod(parent.stat().st_mode | 0o111)
    spec = SandboxSpec(uid=APP_UID, rw_binds=(work,), chdir=work, env={"PATH": "/usr/bin"})
    script = "id -u; touch made; cat /etc/shadow >/dev/null 2>&1 && echo LEAK || echo hidden"
    argv = sandbox.wrap(["sh", "-c", script], spec, use_bwrap=use_bwrap)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    lines = result.stdout.split()
    assert lines[0] == str(APP_UID), result.stderr
    assert lines[1] == "hidden"
    assert (work / "made").stat().st_uid == APP_UID


@pytest.mark.root
@root_only
def test_bwrap_hides_host_and_isolates_network(tmp_path: Path) -> None:
    if not sandbox.available():
        pytest.skip("bubblewrap unavailable")
    spec = SandboxSpec(uid=APP_UID, env={"PATH": "/usr/bin"})
    script = (
        "test -e /etc/passwd && echo passwd; test -e /root && echo rootdir;"
        " test -e /sys && echo sys; cat /proc/net/dev | wc -l; echo $$"
    )
    result = subprocess.run(
        sandbox.wrap(["sh", "-c", script], spec), capture_output=True, text=True, timeout=30
    )
    out = result.stdout.split()
    assert "passwd" not in out and "rootdir" not in out and "sys" not in out
    assert out[-2] == "3"  # header lines + loopback only: no host interfaces
    assert int(out[-1]) < 10  # own pid namespace


@pytest.mark.root
@root_only
def test_cgroup_memory_limit_oom_and_kill(tmp_path: Path) -> None:
    if not Cgroup.supported():
        pytest.skip("cgroups not writable")
    group = Cgroup(f"test-{uuid.uuid4().hex[:8]}").create(memory_mb=64, pids_max=64)
    try:
        hog = "x = []\nwhile True: x.append(bytearray(8 << 20))"
        spec = SandboxSpec(uid=APP_UID, env={"PATH": "/usr/bin"})
        argv = group.join_argv() + sandbox.wrap(["python3", "-c", hog], spec)
        result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        assert result.returncode != 0
        assert group.oom_killed()
        sleeper = subprocess.Popen(group.join_argv() + sandbox.wrap(["sleep", "60"], spec))
        deadline = time.monotonic() + 5
        while len(group.pids()) < 2 and time.monotonic() < deadline:  # bwrap + sleep joined
            time.sleep(0.02)
        group.kill()
        assert sleeper.wait(timeout=10) != 0
        assert group.pids() == []
    finally:
        group.remove()
    assert not any(d.exists() for d in group.dirs())


@pytest.mark.root
@root_only
@pytest.mark.parametrize("use_bwrap", [True, False])
def test_env_file_keeps_secrets_out_of_argv(tmp_path: Path, use_bwrap: bool) -> None:
    if use_bwrap and not sandbox.available():
        pytest.skip("bubblewrap unavailable")
    for parent in [tmp_path, *tmp_path.parents]:  # the fallback walks the real path
        if parent != Path("/") and parent.stat().st_mode & 0o111 != 0o111:
            parent.chmod(parent.stat().st_mode | 0o111)
    secret = "tok 'en\" $x `y`"
    env_file = sandbox.write_env_file(
        tmp_path / "app.env", {"TOKEN": secret, "bad-name": "x"}, APP_UID
    )
    assert (env_file.stat().st_mode & 0o777) == 0o600
    spec = SandboxSpec(uid=APP_UID, env={"PATH": "/usr/bin"}, env_file=env_file)
    argv = sandbox.wrap(["sh", "-c", 'printf %s "$TOKEN"'], spec, use_bwrap=use_bwrap)
    assert not any(secret in arg for arg in argv)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout == secret, result.stderr
