"""API keys are ``<prefix>.<secret>``; only a SHA-256 of the secret is stored.

The secret carries 256 bits from :mod:`secrets`, so a fast hash is enough:
there is nothing to brute-force that a slow password hash would protect.
Every function here hides all its variables, and its callees', from Django's
error reports (``sensitive_variables``): they hold the secret under any name.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from django.utils.crypto import constant_time_compare, get_random_string
from django.views.decorators.debug import sensitive_variables

PREFIX_LENGTH = 12
KEY_RE = re.compile(rf"^([A-Za-z0-9]{{{PREFIX_LENGTH}}})\.([A-Za-z0-9_-]{{43}})$")


@sensitive_variables()
def generate_key() -> tuple[str, str, str]:
    """Return ``(raw_key, prefix, hashed_secret)`` for a new key."""
    prefix = get_random_string(PREFIX_LENGTH)
    secret = secrets.token_urlsafe(32)
    return f"{prefix}.{secret}", prefix, hash_secret(secret)


@sensitive_variables()
def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@sensitive_variables()
def split_key(raw_key: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else ``None`` (no database needed)."""
    match = KEY_RE.match(raw_key)
    return (match.group(1), match.group(2)) if match else None


@sensitive_variables()
def verify_secret(secret: str, hashed_secret: str) -> bool:
    return constant_time_compare(hash_secret(secret), hashed_secret)
