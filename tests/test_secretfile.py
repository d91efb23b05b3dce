"""Secrets crmgate generates for itself (security/secretfile.py)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from crmgate.security.secretfile import SecretFileError, load_or_create


def test_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = load_or_create(tmp_path, "pepper")
    second = load_or_create(tmp_path, "pepper")
    assert first == second and len(first) == 32
    path = tmp_path / "secrets" / "pepper"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert list((tmp_path / "secrets").iterdir()) == [path]  # no temporary file left behind


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path, "pepper")
    os.chmod(tmp_path / "secrets" / "pepper", 0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        load_or_create(tmp_path, "pepper")


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path, "pepper")
    (tmp_path / "secrets" / "pepper").write_text("c2hvcnQ=\n")
    with pytest.raises(SecretFileError, match="expected 32"):
        load_or_create(tmp_path, "pepper")


def _create(path: str, queue: multiprocessing.Queue[bytes]) -> None:
    queue.put(load_or_create(Path(path), "pepper"))


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[bytes] = context.Queue()
    processes = [context.Process(target=_create, args=(str(tmp_path), queue)) for _ in range(6)]
    for process in processes:
        process.start()
    values = {queue.get(timeout=20) for _ in processes}
    for process in processes:
        process.join(timeout=20)
    assert len(values) == 1
