"""Time-based one-time passwords (RFC 6238, SHA-1, 30 s, 6 digits: what every authenticator
app reads from a QR code): one step of clock skew either way, and a code is never accepted
twice (the last accepted step is stored; RFC 6238 section 5.2)."""

from __future__ import annotations

import hmac
import time

import pyotp
import segno

STEP = 30
DIGITS = 6
SKEW = 1  # steps accepted before and after the current one


def new_seed() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226's recommended length


def provisioning_uri(seed: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(seed, digits=DIGITS, interval=STEP).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG (drawn here: the seed never leaves for a QR service)."""
    return str(segno.make(uri, error="m").svg_inline(scale=5, title="TOTP enrolment QR code"))


def accepted_step(
    seed: str, code: str, last_step: int | None, now: float | None = None
) -> int | None:
    """The time step ``code`` is valid for, within the skew and after ``last_step``; None when
    it is wrong, too old or already used."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(seed, digits=DIGITS, interval=STEP)
    current = int((time.time() if now is None else now) // STEP)
    for step in range(current - SKEW, current + SKEW + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP), code):
            return step
    return None
