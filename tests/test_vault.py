"""The credential vault: AES-256-GCM, versioned keys, binding to the record (security/vault.py)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from crmgate.security.vault import (
    DecryptionError,
    Keyring,
    Sealed,
    Vault,
    VaultConfigurationError,
    VaultError,
    key_file_path,
    remove_version_from_key_file,
    rotate_key_file,
)

CANARY = b"canary-secret-7f3a9b2c"
CONTEXT = b"org_A|app_1"


def env_keys(*versions: int) -> str:
    return ",".join(f"{v}:{base64.b64encode(os.urandom(32)).decode()}" for v in versions)


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    vault = Vault(Keyring.parse(env_keys(1)))
    first, second = vault.encrypt(CANARY, CONTEXT), vault.encrypt(CANARY, CONTEXT)
    assert first.blob != second.blob and first.blob[:12] != second.blob[:12]
    assert CANARY not in first.blob
    assert vault.decrypt(first, CONTEXT) == vault.decrypt(second, CONTEXT) == CANARY
    assert len(first.blob) == 12 + len(CANARY) + 16


def test_a_ciphertext_moved_to_another_record_does_not_decrypt() -> None:
    vault = Vault(Keyring.parse(env_keys(1)))
    sealed = vault.encrypt(CANARY, CONTEXT)
    for other in (b"org_A|app_2", b"org_B|app_1", b""):
        with pytest.raises(DecryptionError, match="another record"):
            vault.decrypt(sealed, other)


def test_every_single_bit_flip_is_detected() -> None:
    vault = Vault(Keyring.parse(env_keys(1)))
    sealed = vault.encrypt(CANARY, CONTEXT)
    for index in range(len(sealed.blob)):
        for bit in (0, 7):
            tampered = bytearray(sealed.blob)
            tampered[index] ^= 1 << bit
            with pytest.raises(DecryptionError):
                vault.decrypt(Sealed(sealed.version, bytes(tampered)), CONTEXT)


def test_truncated_ciphertexts_are_refused() -> None:
    vault = Vault(Keyring.parse(env_keys(1)))
    sealed = vault.encrypt(CANARY, CONTEXT)
    for length in (0, 5, 12, 27, len(sealed.blob) - 1):
        with pytest.raises(DecryptionError):
            vault.decrypt(Sealed(sealed.version, sealed.blob[:length]), CONTEXT)


def test_relabelling_the_version_is_detected() -> None:
    keys = env_keys(1)
    key = keys.split(":", 1)[1]
    vault = Vault(Keyring.parse(f"{keys},2:{key}"))  # even with the same key under both versions
    sealed = vault.encrypt(CANARY, CONTEXT)
    assert sealed.version == 2
    with pytest.raises(DecryptionError):
        vault.decrypt(Sealed(1, sealed.blob), CONTEXT)


def test_newest_version_seals_and_old_versions_still_open() -> None:
    old = Vault(Keyring.parse(env_keys(1)))
    sealed = old.encrypt(CANARY, CONTEXT)
    both = Vault(Keyring({**{1: old.keyring.key(1) or b""}, 2: os.urandom(32)}))
    assert both.decrypt(sealed, CONTEXT) == CANARY
    rewrapped = both.rewrap(sealed, CONTEXT)
    assert rewrapped.version == 2 and both.decrypt(rewrapped, CONTEXT) == CANARY
    unknown = Vault(Keyring.parse(env_keys(3)))
    with pytest.raises(DecryptionError, match="no vault key version 1"):
        unknown.decrypt(sealed, CONTEXT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no keys"),
        ("1", "version:base64key"),
        ("x:abc", "version:base64key"),
        ("1:not base64!", "not valid base64"),
        ("1:" + base64.b64encode(b"short").decode(), "expected 32"),
        (f"0:{base64.b64encode(bytes(32)).decode()}", "not positive"),
        (
            f"1:{base64.b64encode(bytes(32)).decode()},1:{base64.b64encode(bytes(32)).decode()}",
            "twice",
        ),
    ],
)
def test_bad_key_configuration_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(VaultConfigurationError, match=message) as error:
        Keyring.parse(text)
    assert "AAAAAAAA" not in str(error.value)  # never echoes key material


def test_key_file_is_created_private_and_reloaded_after_rotation(tmp_path: Path) -> None:
    vault = Vault.from_settings(tmp_path, None)
    path = key_file_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert vault.keyring.versions == [1]
    sealed = vault.encrypt(CANARY, CONTEXT)
    other_process = Vault.from_settings(tmp_path, None)  # same file, same keys
    assert other_process.decrypt(sealed, CONTEXT) == CANARY

    assert rotate_key_file(path) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The running vault notices the new file: new data is sealed with version 2.
    assert vault.encrypt(CANARY, CONTEXT).version == 2
    assert vault.decrypt(sealed, CONTEXT) == CANARY

    with pytest.raises(VaultError, match="newest"):
        remove_version_from_key_file(path, 2)
    remove_version_from_key_file(path, 1)
    assert Vault.from_settings(tmp_path, None).keyring.versions == [2]
    with pytest.raises(DecryptionError, match="retired"):
        vault.decrypt(sealed, CONTEXT)


def test_environment_keys_win_over_the_key_file(tmp_path: Path) -> None:
    vault = Vault.from_settings(tmp_path, env_keys(4, 7))
    assert vault.keyring.versions == [4, 7] and vault.key_file is None
    assert vault.encrypt(CANARY, CONTEXT).version == 7
    assert not key_file_path(tmp_path).exists()


def test_reprs_and_errors_carry_no_secret() -> None:
    keys = env_keys(1)
    vault = Vault(Keyring.parse(keys))
    sealed = vault.encrypt(CANARY, CONTEXT)
    key_b64 = keys.split(":", 1)[1]
    for text in (repr(vault), repr(vault.keyring), repr(sealed)):
        assert key_b64 not in text and CANARY.decode() not in text
    with pytest.raises(DecryptionError) as error:
        vault.decrypt(sealed, b"other")
    assert CANARY.decode() not in str(error.value) and key_b64 not in str(error.value)


def test_decrypted_credentials_show_field_names_only() -> None:
    from crmgate.store.applications import Credentials

    credentials = Credentials({"access_token": CANARY.decode()}, {"session_id": CANARY.decode()})
    assert CANARY.decode() not in repr(credentials) + str(credentials)
    assert "access_token" in repr(credentials)
    assert Credentials.from_bytes(credentials.to_bytes()).fields == credentials.fields
