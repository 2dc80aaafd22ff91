"""The one error tree of Phemeral.

Every error a user can see is a `PhemeralError`. Its `message` is written for people and reaches
them intact (API JSON body, CLI stderr, build log); `exit_code` is what the CLI exits with and
`http_status` what the API answers. Code catches narrowly and re-raises one of these with
``from exc``; only the edges (API handler, CLI) render them.

    PhemeralError
    ├── ConfigError                 bad settings or command-line values           (exit 2, 400)
    ├── DetectionError              the source tree cannot be detected            (exit 2, 422)
    ├── NotFound                    unknown project, environment, deployment       (exit 1, 404)
    ├── Conflict                    name taken, state does not allow the action    (exit 1, 409)
    ├── InvalidInput                a request or value is malformed               (exit 2, 422)
    ├── Unauthorized                missing or wrong token / signature             (exit 1, 401)
    ├── SourceError                 an archive or repository is refused / unreadable (exit 1, 422)
    ├── BuildError                  a build stage failed (stage named)             (exit 1, 500)
    │   └── BuildTimeout            the build ran past its wall-clock limit
    ├── RuntimeFailure              an instance could not start or serve          (exit 1, 503)
    │   ├── BootFailed              the app crashed or never bound $PORT in time
    │   └── Unavailable             no instance can serve now (queue full, crash loop)
    ├── StoreUnavailable            the database is locked or unreachable          (exit 1, 503)
    ├── GitHubRefused               GitHub's API refused or failed a request        (exit 1, 502)
    └── ServiceFailure              a backing service cannot start / be changed    (exit 1, 503)
"""

from __future__ import annotations

from typing import ClassVar


class PhemeralError(Exception):
    """Base of every error whose message is meant for people."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(PhemeralError):
    """A setting or command-line value is missing or malformed."""

    exit_code = 2
    http_status = 400
    code = "config_error"


class DetectionError(PhemeralError):
    """The project cannot be detected: says what was looked for, what was found, how to fix it."""

    exit_code = 2
    http_status = 422
    code = "detection_failed"


class NotFound(PhemeralError):
    """An unknown project, environment, deployment or domain."""

    http_status = 404
    code = "not_found"


class Conflict(PhemeralError):
    """A name is taken, or the object's state does not allow the action."""

    http_status = 409
    code = "conflict"


class InvalidInput(PhemeralError):
    """A request body, name or value is malformed."""

    exit_code = 2
    http_status = 422
    code = "invalid_input"


class Unauthorized(PhemeralError):
    """A token or signature is missing or wrong."""

    http_status = 401
    code = "unauthorized"


class PayloadTooLarge(PhemeralError):
    """A request body over the server's limit for that endpoint (checked while it streams)."""

    http_status = 413
    code = "payload_too_large"


class TooManyFailures(PhemeralError):
    """Too many failed sign-ins from one client address; try again after ``retry_after``."""

    http_status = 429
    code = "too_many_failures"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed authentications from this address; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class SourceError(PhemeralError):
    """An uploaded archive or a repository was refused or could not be read."""

    http_status = 422
    code = "bad_source"


class BuildError(PhemeralError):
    """A build stage failed; `stage` names it."""

    code = "build_failed"

    def __init__(self, message: str, *, stage: str = "build") -> None:
        super().__init__(message)
        self.stage = stage


class ReleaseFailed(BuildError):
    """The release command exited non-zero or ran past its limit; the deployment fails."""

    code = "release_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="release")


class BuildTimeout(BuildError):
    """The build ran past its wall-clock limit."""

    code = "build_timeout"


class RuntimeFailure(PhemeralError):
    """An instance could not start or serve."""

    http_status = 503
    code = "runtime_failure"


class BootFailed(RuntimeFailure):
    """The app crashed before answering, or never bound $PORT within the boot timeout."""

    code = "boot_failed"


class Unavailable(RuntimeFailure):
    """No instance can serve right now (wake queue full, crash-loop back-off)."""

    code = "unavailable"


class StoreUnavailable(PhemeralError):
    """The database is locked past its timeout or unreachable; retrying later may work."""

    http_status = 503
    code = "store_unavailable"


class GitHubRefused(PhemeralError):
    """GitHub's API refused a request (an App token, an installation) or could not be reached;
    the message carries GitHub's own status and ``message`` intact (never a token or key)."""

    http_status = 502
    code = "github_refused"


class ServiceFailure(PhemeralError):
    """A backing service (PostgreSQL, Redis) could not be started, provisioned or changed."""

    http_status = 503
    code = "service_failed"
