from __future__ import annotations

from ratelimit_tiers.management.commands import create_api_key


class Command(create_api_key.Command):
    """The app-prefixed name of ``create_api_key`` (which stays as an alias)."""
