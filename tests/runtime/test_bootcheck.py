"""The boot check's reading of an answer: status line, and what the build log should add."""

from __future__ import annotations

import pytest

from phemeral.runtime.bootcheck import answer_note, status_of


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 400 Bad", 400),
        (b"HTTP/1.1 503", 503),
        (b"HTTP/1.1 ", None),
        (b"SSH-2.0-Open", None),
        (b"", None),
    ],
)
def test_the_status_code_is_read_from_the_first_bytes(head: bytes, status: int | None) -> None:
    assert status_of(head) == status


def test_a_django_400_names_allowed_hosts_and_the_base_domain() -> None:
    note = answer_note(400, "d-1.apps.example", "apps.example", django=True)
    assert note is not None and "ALLOWED_HOSTS" in note and "'.apps.example'" in note
    assert answer_note(400, "d-1.apps.example", "apps.example", django=False) is None


@pytest.mark.parametrize("status", [200, 204, 301, 302, 404, None])
def test_ordinary_answers_add_nothing(status: int | None) -> None:
    assert answer_note(status, "h", "b", django=True) is None


def test_a_server_error_on_the_health_path_is_a_warning() -> None:
    note = answer_note(500, "h", "b", django=False)
    assert note is not None and note.startswith("warning: the app answered 500")
