"""The audit key file: versioned keys outside the database, and where keyed events start.

The audit keys live outside the database, in ``<data dir>/secrets/audit_keys`` (mode 0600,
``version:base64`` lines like the vault's key file): whoever can write the database but not read
that file cannot recompute a chain that verifies. Each event records the id of the key that
chained it (``key_id``: its version and a fingerprint, so another host's key of the same version
is told apart); ``crmgate audit rotate-key`` adds a version, which chains every event from then
on, and verify checks each event with its own key. The file is made with the first event
chained under a key, and only while the chain holds no keyed event (a lost file, or a second
host without a copy, is an error, never a new key). It also records where keyed events start
(``# keyed_from=N``: 1 on a fresh install, the head's seq + 1 on a trail an older crmgate
began): events before N (``key_id`` NULL, plain SHA-256) keep verifying, any unkeyed event from
N on and any chain shorter than N - 1 events is a forgery, so a forger cannot turn the keyed
chain back into plain SHA-256 and chain new keyed events onto that.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from pathlib import Path

from crmgate.security import secretfile
from crmgate.security.vault import (
    KEY_BYTES,
    Keyring,
    VaultConfigurationError,
    rotate_key_file,
)

KEY_FILE = "audit_keys"
KEY_FILE_HEADER = (
    "crmgate audit keys: 'version:base64key'; the highest version chains new events. "
    "Keep every version: `crmgate audit verify` needs each one for the events it chained."
)
# The key file's second line: where keyed events start. A comment to the keyring parser (the
# vault's), data to crmgate. No commas: the parser splits items at them.
KEYED_FROM = re.compile(r"^# keyed_from=(\d+)\b", re.MULTILINE)


class AuditKeyError(Exception):
    """The audit key file is missing or unusable. The message never holds key material."""


def key_file_path(data_dir: Path) -> Path:
    return secretfile.secrets_dir(data_dir) / KEY_FILE


def key_id(version: int, key: bytes) -> str:
    """The id an event records for the key that chained it: the version, and a fingerprint
    that tells two different keys of one version apart (another host's key file)."""
    fingerprint = hmac.new(key, b"crmgate audit key id", hashlib.sha256).hexdigest()[:12]
    return f"{version}:{fingerprint}"


def _file_header(keyed_from: int) -> str:
    return (
        f"{KEY_FILE_HEADER}\n# keyed_from={keyed_from}: every audit event from #{keyed_from} "
        "on is keyed. Keep this line: verify relies on it."
    )


class AuditKeys:
    """The versioned audit keys of ``<data dir>/secrets/audit_keys`` (the vault's ``Keyring``
    format and file machinery) and where keyed events start. Made by ``create`` only, which the
    append calls when the chain holds no keyed event yet, never by a reader; re-read when the
    file changes, so `crmgate audit rotate-key` reaches a running gateway without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keyring: Keyring | None = None
        self._keyed_from = 0
        self._stamp: tuple[int, int, int] | None = None

    def _load(self) -> Keyring | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._stamp or self._keyring is None:
            try:
                text = secretfile.read_private(self.path).decode()
                keyring = Keyring.parse(text)
            except (VaultConfigurationError, secretfile.SecretFileError, UnicodeDecodeError) as e:
                raise AuditKeyError(f"the audit key file {self.path} is unusable: {e}") from None
            found = KEYED_FROM.search(text)
            if found is None:
                raise AuditKeyError(
                    f"the audit key file {self.path} has no '# keyed_from=N' line (N: the number "
                    "of the first event chained under an audit key): restore the file from a "
                    "backup of the data dir"
                )
            self._keyring, self._keyed_from, self._stamp = keyring, int(found[1]), stamp
        return self._keyring

    def exists(self) -> bool:
        """Whether the key file is there; raises AuditKeyError when it is but is unusable."""
        return self._load() is not None

    def create(self, keyed_from: int) -> None:
        """Make the key file with version 1, keyed events starting at ``keyed_from``. The
        caller makes sure no keyed event exists yet; if another process made the file first,
        theirs is kept."""
        first = Keyring({1: secrets.token_bytes(KEY_BYTES)}).render(_file_header(keyed_from))
        with contextlib.suppress(FileExistsError):
            secretfile.create_private(self.path, first.encode())

    def signing(self) -> tuple[str, bytes]:
        """The id and key that chain new events: the newest version."""
        keyring = self._load()
        if keyring is None:
            raise AuditKeyError(f"there is no audit key file {self.path}")
        key = keyring.key(keyring.newest)
        assert key is not None
        return key_id(keyring.newest, key), key

    def keyed_from(self) -> int:
        """The number of the first event that must be keyed."""
        if self._load() is None:
            raise AuditKeyError(f"there is no audit key file {self.path}")
        return self._keyed_from

    def all(self) -> dict[str, bytes]:
        """Key id -> key, every version: what verify checks with. A missing file is an error:
        without it no keyed event can be checked, and verify never passes silently."""
        keyring = self._load()
        if keyring is None:
            raise AuditKeyError(
                f"the audit key file {self.path} does not exist, so the chain cannot be "
                "verified: restore it from the backup of the data dir (crmgate makes it with "
                "the first event it records; on several hosts every one needs the same file)"
            )
        keys = {version: keyring.key(version) for version in keyring.versions}
        return {key_id(v, k): k for v, k in keys.items() if k is not None}

    def rotate(self) -> str:
        """Add a key version, which chains every event from now on; returns its id."""
        if self._load() is None:
            raise AuditKeyError(
                f"there is no audit key file {self.path} yet: crmgate makes it with the first "
                "event it records"
            )
        try:
            rotate_key_file(self.path, _file_header(self._keyed_from))
        except VaultConfigurationError as error:
            raise AuditKeyError(f"the audit key file {self.path} is unusable: {error}") from None
        return self.signing()[0]

    def __repr__(self) -> str:
        return f"AuditKeys(file={self.path})"
