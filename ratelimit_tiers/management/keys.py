"""What the key commands share: finding a key by its public prefix."""

from __future__ import annotations

from django.core.management.base import CommandError

from ratelimit_tiers.models import APIKey


def get_key(prefix: str) -> APIKey:
    key = APIKey.objects.select_related("account").filter(prefix=prefix).first()
    if key is None:
        raise CommandError(f"No API key has the prefix {prefix!r}.")
    return key
