"""The credential vault: AES-256-GCM envelope with versioned master keys (after Vault transit).

Every ciphertext records the key version that sealed it. ``rotate`` adds a version that seals all
new data; old versions keep opening what they sealed until ``rewrap`` has moved every row to the
newest version and ``retire`` removes them. Each encryption uses a fresh 96-bit random nonce, and
the caller's context (for credentials: the organisation and application ids) is bound as
associated data together with the version, so a ciphertext copied to another row, or relabelled
with another version, fails authentication instead of decrypting.

Keys come from ``CRMGATE_VAULT_KEYS`` ("1:<base64>,2:<base64>") or from the key file
``<data dir>/secrets/vault_keys`` (created with version 1 on first start, mode 0600). A process
re-reads the key file when it changes, so a rotation by `crmgate vault rotate` reaches a running
gateway without a restart.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crmgate.security import secretfile

KEY_FILE = "vault_keys"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class VaultError(Exception):
    """A vault failure. The message never contains key material or plaintext."""


class VaultConfigurationError(VaultError):
    pass


class DecryptionError(VaultError):
    pass


@dataclass(frozen=True, slots=True)
class Sealed:
    """A ciphertext and the version of the key that sealed it."""

    version: int
    blob: bytes  # nonce || ciphertext || tag

    def __repr__(self) -> str:
        return f"Sealed(version={self.version}, {len(self.blob)} bytes)"


class Keyring:
    """Key versions -> 32-byte keys. Parsed from and rendered to "version:base64" items."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        if not keys:
            raise VaultConfigurationError("the vault has no keys")
        for version, key in keys.items():
            if version < 1:
                raise VaultConfigurationError(f"vault key version {version} is not positive")
            if len(key) != KEY_BYTES:
                raise VaultConfigurationError(
                    f"vault key version {version} is {len(key)} bytes, expected {KEY_BYTES}"
                )
        self._keys = dict(sorted(keys.items()))

    @classmethod
    def parse(cls, text: str) -> Keyring:
        keys: dict[int, bytes] = {}
        items = [item.strip() for line in text.splitlines() for item in line.split(",")]
        for item in items:
            if not item or item.startswith("#"):
                continue
            version_text, separator, encoded = item.partition(":")
            if not separator or not version_text.strip().isdigit():
                raise VaultConfigurationError(
                    "vault keys must read 'version:base64key' (e.g. 1:…), one per line or comma"
                )
            version = int(version_text)
            if version in keys:
                raise VaultConfigurationError(f"vault key version {version} appears twice")
            try:
                keys[version] = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise VaultConfigurationError(
                    f"vault key version {version} is not valid base64"
                ) from None
        return cls(keys)

    def render(
        self,
        header: str = "crmgate vault keys: 'version:base64key'; the highest version seals new data",
    ) -> str:
        lines = [f"# {header}"]
        lines += [f"{v}:{base64.b64encode(k).decode()}" for v, k in self._keys.items()]
        return "\n".join(lines) + "\n"

    @property
    def versions(self) -> list[int]:
        return list(self._keys)

    @property
    def newest(self) -> int:
        return max(self._keys)

    def key(self, version: int) -> bytes | None:
        return self._keys.get(version)

    def with_new_version(self) -> Keyring:
        return Keyring({**self._keys, self.newest + 1: secrets.token_bytes(KEY_BYTES)})

    def without(self, version: int) -> Keyring:
        if version == self.newest:
            raise VaultError("the newest key version seals new data and cannot be retired")
        if version not in self._keys:
            raise VaultError(f"there is no vault key version {version}")
        return Keyring({v: k for v, k in self._keys.items() if v != version})

    def __repr__(self) -> str:
        return f"Keyring(versions={self.versions})"


def _associated_data(context: bytes, version: int) -> bytes:
    return b"crmgate-vault|v%d|" % version + context


class Vault:
    def __init__(self, keyring: Keyring, key_file: Path | None = None) -> None:
        self._keyring = keyring
        self._key_file = key_file
        self._stamp = _stamp(key_file) if key_file else None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, data_dir: Path, env_keys: str | None) -> Vault:
        if env_keys:
            return cls(Keyring.parse(env_keys))
        path = key_file_path(data_dir)
        if not path.exists():
            initial = Keyring({1: secrets.token_bytes(KEY_BYTES)}).render().encode()
            try:
                secretfile.create_private(path, initial)
            except FileExistsError:
                pass  # another process created it first; use theirs
        return cls(_read_keyring(path), path)

    @property
    def keyring(self) -> Keyring:
        self._reload_if_changed()
        return self._keyring

    @property
    def key_file(self) -> Path | None:
        return self._key_file

    def _reload_if_changed(self) -> None:
        if self._key_file is None:
            return
        stamp = _stamp(self._key_file)
        if stamp != self._stamp:
            with self._lock:
                self._keyring = _read_keyring(self._key_file)
                self._stamp = stamp

    def encrypt(self, plaintext: bytes, context: bytes) -> Sealed:
        keyring = self.keyring
        version = keyring.newest
        key = keyring.key(version)
        assert key is not None
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext, _associated_data(context, version))
        return Sealed(version, nonce + sealed)

    def decrypt(self, sealed: Sealed, context: bytes) -> bytes:
        key = self.keyring.key(sealed.version)
        if key is None:
            raise DecryptionError(
                f"no vault key version {sealed.version}: it was retired or never existed here"
            )
        if len(sealed.blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("the ciphertext is truncated")
        nonce, body = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, _associated_data(context, sealed.version))
        except InvalidTag:
            raise DecryptionError(
                "the ciphertext failed authentication: it was altered, truncated, or belongs "
                "to another record"
            ) from None

    def rewrap(self, sealed: Sealed, context: bytes) -> Sealed:
        """The same plaintext sealed under the newest version (the plaintext never leaves)."""
        return self.encrypt(self.decrypt(sealed, context), context)

    def __repr__(self) -> str:
        return f"Vault(versions={self._keyring.versions}, file={self._key_file})"


def key_file_path(data_dir: Path) -> Path:
    return secretfile.secrets_dir(data_dir) / KEY_FILE


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def _read_keyring(path: Path) -> Keyring:
    try:
        return Keyring.parse(secretfile.read_private(path).decode())
    except UnicodeDecodeError:
        raise VaultConfigurationError(f"{path} is not a vault key file") from None


@contextmanager
def key_file_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file between operator commands."""
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def rotate_key_file(path: Path, header: str | None = None) -> int:
    """Add a key version to the key file (of the vault, or another keyring in its format:
    ``header`` is its first line); returns the new version."""
    with key_file_lock(path):
        keyring = _read_keyring(path).with_new_version()
        rendered = keyring.render(header) if header else keyring.render()
        secretfile.replace_private(path, rendered.encode())
        return keyring.newest


def remove_version_from_key_file(path: Path, version: int) -> None:
    with key_file_lock(path):
        keyring = _read_keyring(path).without(version)
        secretfile.replace_private(path, keyring.render().encode())
