"""The unprivileged system user the embedded PostgreSQL cluster and the Redis servers run as.

PostgreSQL refuses to run as root, and neither server needs the platform's privileges. When
the platform itself is not root, the servers run as the platform's own user.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from phemeral.errors import ServiceFailure

SYSTEM_USER = "phemeral-services"
log = logging.getLogger("phemeral.services")


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    name: str

    def owns(self, path: Path, mode: int = 0o700) -> None:
        """Create ``path`` (a directory) owned by this account with ``mode``."""
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
        path.chmod(mode)

    def run_kwargs(self) -> dict[str, object]:
        """``subprocess`` arguments that run a child as this account (nothing when it is us)."""
        if os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def service_account() -> Account:
    """`phemeral-services` (created on first use) when root; otherwise the current user."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_uid, entry.pw_gid, entry.pw_name)
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode not in (0, 9):  # 9: created meanwhile by another platform
            raise ServiceFailure(
                f"cannot create the system user {SYSTEM_USER} for the database servers: "
                f"{result.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(SYSTEM_USER)
    return Account(entry.pw_uid, entry.pw_gid, entry.pw_name)


def make_traversable(path: Path) -> None:
    """Let other users pass through (not list) every parent of ``path``.

    The servers run as their own user inside the data dir; a parent like ``/root`` (0700)
    would stop them. Only the search bit is added, and only where it is missing.
    """
    for parent in reversed(path.parents):
        if parent == Path("/"):
            continue
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            if os.geteuid() != 0 and parent.stat().st_uid != os.geteuid():
                raise ServiceFailure(
                    f"{parent} is not traversable by other users; the database servers "
                    "cannot reach the data dir below it"
                )
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            log.warning(
                "made %s traversable (o+x) so the database servers reach the data dir", parent
            )
