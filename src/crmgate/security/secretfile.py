"""Secrets crmgate generates for itself: created once in the data dir, mode 0600, never logged."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path


class SecretFileError(RuntimeError):
    """A secret file exists but cannot be trusted (wrong permissions, wrong size, unreadable)."""


def secrets_dir(data_dir: Path) -> Path:
    path = data_dir / "secrets"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def load_or_create(data_dir: Path, name: str, nbytes: int = 32) -> bytes:
    """Return the secret stored in ``<data_dir>/secrets/<name>``, creating it on first use.

    The file holds the base64 of ``nbytes`` random bytes; two processes starting together agree
    on one value.
    """
    path = secrets_dir(data_dir) / name
    if not path.exists():
        try:
            create_private(path, base64.b64encode(secrets.token_bytes(nbytes)) + b"\n")
        except FileExistsError:
            pass  # another process created it first: use theirs
    return _read(path, nbytes)


def create_private(path: Path, content: bytes) -> None:
    """Create ``path`` with ``content``, mode 0600, whole or not at all; FileExistsError if it
    exists (the first writer wins and nobody ever reads a half-written file)."""
    tmp = _write_temporary(path, content)
    try:
        os.link(tmp, path)  # atomic and refuses to overwrite
    finally:
        tmp.unlink()


def replace_private(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically (temporary file, fsync, rename), mode 0600."""
    os.replace(_write_temporary(path, content), path)


def _write_temporary(path: Path, content: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def read_private(path: Path) -> bytes:
    """The bytes of a secret file, refused if other users may read it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretFileError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
        )
    return path.read_bytes()


def _read(path: Path, nbytes: int) -> bytes:
    raw = read_private(path).strip()
    try:
        secret = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise SecretFileError(f"{path} does not hold base64 data") from exc
    if len(secret) < nbytes:
        raise SecretFileError(f"{path} holds {len(secret)} bytes, expected {nbytes}")
    return secret
