"""``manage.py ratelimit_tiers_rotate_key``: a new key, the old one kept for a grace period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers.conf import conf
from ratelimit_tiers.management.keys import get_key


class Command(BaseCommand):
    help = (
        "Rotate the API key with this PREFIX: issue a new key for the same account and name, and let "
        "the old one keep working for a grace period (RATELIMIT_TIERS_ROTATION_GRACE, 24 hours by "
        "default) so clients can switch over. The new raw key is printed alone on the last line; it is "
        "not stored and cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The old key's 12-character public prefix.")
        parser.add_argument(
            "--grace",
            type=int,
            default=None,
            metavar="SECONDS",
            help="Seconds the old key keeps working (default: RATELIMIT_TIERS_ROTATION_GRACE).",
        )

    @sensitive_variables()  # The raw key, and the output calls it is passed to.
    def handle(self, *args: Any, prefix: str, grace: int | None, **options: Any) -> None:
        seconds = conf.ROTATION_GRACE if grace is None else grace
        if seconds < 0:
            raise CommandError("--grace must not be negative.")
        key = get_key(prefix)
        try:
            new_key, raw_key = key.rotate(timedelta(seconds=seconds))
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stderr.write(
            f"Rotated {key.prefix} ({key.name}) of {key.account.name}: it works until "
            f"{key.expires_at:%Y-%m-%d %H:%M:%S %Z}. New key {new_key.prefix}; store it now:"
        )
        self.stdout.write(raw_key)
