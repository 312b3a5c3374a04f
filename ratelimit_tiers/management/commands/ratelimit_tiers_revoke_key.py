"""``manage.py ratelimit_tiers_revoke_key``: revoke a key, for good."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ratelimit_tiers.management.keys import get_key


class Command(BaseCommand):
    help = (
        "Revoke the API key with this PREFIX (the part before the dot). The key stops working on its "
        "next request, in every process. Revocation cannot be undone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's 12-character public prefix, as shown in the admin.")

    def handle(self, *args: Any, prefix: str, **options: Any) -> None:
        key = get_key(prefix)
        if key.revoked:
            self.stdout.write(f"Key {key.prefix} ({key.name}) of {key.account.name} was already revoked.")
            return
        key.revoked = True
        key.save(update_fields=["revoked"])  # save(), not update(): evicts the cached policy.
        self.stdout.write(f"Revoked key {key.prefix} ({key.name}) of {key.account.name}.")
