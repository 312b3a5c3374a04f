"""``manage.py create_api_key``: the older name of ``ratelimit_tiers_create_key``."""

from __future__ import annotations

from ratelimit_tiers.management.commands import ratelimit_tiers_create_key


class Command(ratelimit_tiers_create_key.Command):
    """The older name of ``ratelimit_tiers_create_key``, kept as an alias."""
