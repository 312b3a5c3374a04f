"""``manage.py ratelimit_tiers_reset_key``: a key's counters back to a full quota."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ratelimit_tiers import categories
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.management.keys import get_key
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.signals import counters_reset
from ratelimit_tiers.storage import get_storage


class Command(BaseCommand):
    help = (
        "Reset the rate-limit counters of the API key with this PREFIX in every category, so its next "
        "requests start from a full quota. Its limits and status do not change."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's 12-character public prefix.")

    def handle(self, *args: Any, prefix: str, **options: Any) -> None:
        key = get_key(prefix)
        try:
            get_storage().clear(key.prefix, key.account_id, categories.in_use(key.account.effective_rules()))
        except StorageUnavailable as exc:
            raise CommandError(f"The rate-limit store is unavailable: {exc}") from exc
        counters_reset.send(sender=APIKey, prefixes=[key.prefix])
        self.stdout.write(f"Reset the counters of {key.prefix} ({key.name}) of {key.account.name}.")
