"""Secret values at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key kept beside the data.

The key lives in ``{data_dir}/secret.key`` (mode 0600), created on first use. Losing it makes
stored secrets unreadable, so it is never rotated silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from phemeral.errors import ConfigError

KEY_FILE = "secret.key"


class SecretBox:
    """Encrypts and decrypts short strings (environment variables, webhook secrets, tokens)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def open(cls, data_dir: Path) -> SecretBox:
        """Read the key from the data dir, creating it (0600) the first time."""
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            key = Fernet.generate_key()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
        key = path.read_bytes().strip()
        try:
            return cls(key)
        except ValueError as exc:
            raise ConfigError(f"{path} does not hold a valid secret key") from exc

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise ConfigError(
                "a stored secret cannot be decrypted with the key in the data dir"
            ) from exc
