"""How API values read on the pages (pure functions, fixed `now`)."""

from datetime import UTC, datetime
from urllib.parse import parse_qs

from phemeral.dashboard.present import (
    age,
    clock,
    duration,
    environment_urls,
    group_stages,
    idle_memory,
    instance_summary,
    log_pages,
    log_position,
    parse_log_position,
    safe_next,
    setting_rows,
    setting_warnings,
    trigger_summary,
    wake_summary,
)

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def test_age_and_duration() -> None:
    assert age("2026-01-02T11:59:58+00:00", NOW) == "just now"
    assert age("2026-01-02T11:57:55Z", NOW) == "2m 05s ago"
    assert age("2026-01-02T09:00:00", NOW) == "3h 00m ago"  # naive means UTC
    assert age(None, NOW) == "—"
    assert duration("2026-01-02T11:59:00Z", "2026-01-02T11:59:42Z", NOW) == "42s"
    assert duration("2026-01-02T11:59:00Z", None, NOW) == "1m 00s so far"


def test_trigger_summary() -> None:
    push = {"kind": "push", "branch": "main", "pusher": "alice", "commit": "0123456789abcdef"}
    assert trigger_summary(push) == "push to main by alice (0123456789ab)"
    assert trigger_summary({"kind": "manual"}) == "manual"
    assert trigger_summary("manual") == "manual"
    assert trigger_summary(None) == "manual"


def test_instances_are_reported_apart_from_status() -> None:
    assert instance_summary({"instances": 1, "state": "running"}) == "running (1)"
    assert instance_summary({"instances": 0, "state": "stopped"}) == "scaled to zero"
    assert instance_summary({"instances": 0, "state": "starting"}) == "starting"
    assert instance_summary(None) == "unknown"


def _line(stage: str, message: str, second: int) -> dict[str, str]:
    return {"stage": stage, "message": message, "timestamp": f"2026-01-02T12:00:{second:02d}Z"}


def test_stages_group_consecutive_lines_and_mark_the_failing_one() -> None:
    lines = [
        _line("detect", "fastapi found", 1),
        _line("install", "resolving", 2),
        _line("install", "ERROR: no matching distribution", 3),
        _line("verify", "skipped", 4),
    ]
    stages = group_stages(lines, "failed", "install failed: no matching distribution")
    assert [s.name for s in stages] == ["detect", "install", "verify"]
    assert [s.failed for s in stages] == [False, True, False]
    assert stages[1].error_lines == 1
    assert stages[1].started == "12:00:02.000" and stages[1].ended == "12:00:03.000"
    # no stage named in the reason: the last stage is the one that failed
    assert [s.failed for s in group_stages(lines, "failed", "boom")] == [False, False, True]
    assert not any(s.failed for s in group_stages(lines, "successful"))


def test_setting_rows_read_both_snapshot_shapes() -> None:
    nested = {"framework": {"value": "fastapi", "source": "pyproject.toml"}}
    flat = {"framework": "flask", "sources": {"framework": "requirements.txt"}}
    assert [(r.name, r.value, r.source) for r in setting_rows(nested)] == [
        ("framework", "fastapi", "pyproject.toml")
    ]
    assert [(r.name, r.value, r.source) for r in setting_rows(flat)] == [
        ("framework", "flask", "requirements.txt")
    ]
    assert setting_rows(None) == []
    suffixed = {"python_version": "3.12", "python_version_source": "platform default"}
    assert [(r.name, r.value, r.source) for r in setting_rows(suffixed)] == [
        ("python_version", "3.12", "platform default")
    ]
    assert setting_warnings({"warnings": ["add gunicorn"], "x": 1}) == ["add gunicorn"]


def test_environment_urls() -> None:
    def url(label: str) -> str:
        return f"http://{label}.phemeral.localhost:8000"

    assert environment_urls({"domains": ["api-production"]}, url) == [
        "http://api-production.phemeral.localhost:8000"
    ]
    assert environment_urls({"domains": [{"label": "x"}]}, url) == [
        "http://x.phemeral.localhost:8000"
    ]
    assert environment_urls({"urls": ["http://a"]}, url) == ["http://a"]


def test_sign_in_only_returns_to_local_paths() -> None:
    assert safe_next("/projects/a") == "/projects/a"
    for hostile in ("https://evil.example", "//evil.example", "/\\evil.example", "", None):
        assert safe_next(hostile) == "/projects"


def test_log_pages_walk_older_and_back_newer() -> None:
    filters = {"stream": "stderr", "q": ""}
    newer, older = log_pages(filters, "", "", "C1")
    assert newer is None
    assert older is not None
    q1 = {k: v[0] for k, v in parse_qs(older).items()}
    assert q1 == {"stream": "stderr", "cursor": "C1", "trail": "~"}
    newer, older = log_pages(filters, q1["cursor"], q1["trail"], "C2")
    assert newer == "stream=stderr"  # back to the first page
    q2 = {k: v[0] for k, v in parse_qs(older or "").items()}
    assert q2["cursor"] == "C2" and q2["trail"] == "~,C1"
    newer, older = log_pages(filters, q2["cursor"], q2["trail"], None)
    assert older is None
    assert {k: v[0] for k, v in parse_qs(newer or "").items()} == {
        "stream": "stderr",
        "cursor": "C1",
        "trail": "~",
    }


def test_clock_reads_utc_and_offset_timestamps_alike() -> None:
    assert clock("2026-01-02T12:00:03.456789+00:00") == "12:00:03.456"
    assert clock("2026-01-02T12:00:03Z") == "12:00:03.000"
    assert clock("2026-01-02T12:00:03.4+00:00") == "12:00:03.400"
    assert clock("2026-01-02T14:00:03.456+02:00") == "12:00:03.456"
    assert clock("2026-01-02T12:00:03") == "12:00:03.000"  # naive means UTC
    assert clock("garbage") == "" and clock(None) == ""


def test_log_positions_round_trip_through_event_ids() -> None:
    for cursor, seen in ((None, 0), (None, 7), ("WzEyXQ", 3)):
        assert parse_log_position(log_position(cursor, seen)) == (cursor, seen)
    for junk in (None, "", "abc", "abc x", " 3"):
        assert parse_log_position(junk) is None


def test_the_tier_a_deployment_wakes_from_and_its_idle_memory() -> None:
    dormant = {
        "tier": "template",
        "wake_path": "template",
        "expected_wake_ms": 14.6,
        "idle_pss_kb": 12_595,
    }
    assert wake_summary(dormant).startswith("template tier, ~15 ms")
    assert idle_memory(dormant).startswith("12.3 MiB (PSS")
    paged = {**dormant, "tier": "paged", "expected_wake_ms": 31.0, "idle_pss_kb": 1_536}
    assert wake_summary(paged).startswith("paged tier, ~31 ms")
    assert "is read back" in wake_summary(paged)
    hot = {**paged, "hot_set_in": True, "expected_wake_ms": 16.0}
    assert wake_summary(hot).startswith("paged tier, ~16 ms")
    assert "but for the pages a wake touches" in wake_summary(hot)
    assert idle_memory({**paged, "idle_swap_kb": 30_720}) == (
        "1.5 MiB (PSS: its template, and its share of the project's shared one); "
        "30.0 MiB paged out to swap"
    )
    deep = {"tier": "none", "wake_path": "template", "expected_wake_ms": 412.0, "idle_pss_kb": 0}
    assert wake_summary(deep).startswith("deep tier, ~412 ms")
    assert idle_memory(deep) == "none (nothing resident)"
    command = {"tier": "none", "wake_path": "command", "expected_wake_ms": 380.0}
    assert wake_summary(command).startswith("the start command, run as given, ~380 ms")
    running = {"tier": "running", "wake_path": "template", "expected_wake_ms": None}
    assert wake_summary(running) == "running now: no wake needed"
    assert idle_memory(running) == "— (running)"
    assert idle_memory({"tier": "template", "idle_pss_kb": 0}) == "not measured yet"
    assert wake_summary(None) == idle_memory(None) == "unknown"
