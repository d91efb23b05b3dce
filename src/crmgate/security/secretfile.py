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

    The file holds the base64 of ``nbytes`` random bytes. It is written whole to a temporary file
    and then hard-linked into place, so two processes starting together agree on one value and
    neither ever reads a half-written file.
    """
    path = secrets_dir(data_dir) / name
    if path.exists():
        return _read(path, nbytes)
    tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(secrets.token_bytes(nbytes)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic and refuses to overwrite: the first writer wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path, nbytes)


def _read(path: Path, nbytes: int) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretFileError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
        )
    raw = path.read_bytes().strip()
    try:
        secret = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise SecretFileError(f"{path} does not hold base64 data") from exc
    if len(secret) < nbytes:
        raise SecretFileError(f"{path} holds {len(secret)} bytes, expected {nbytes}")
    return secret
