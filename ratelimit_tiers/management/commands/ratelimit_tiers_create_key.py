"""``manage.py ratelimit_tiers_create_key``: issue a key, printing its secret once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers.models import Account, APIKey, Tier


class Command(BaseCommand):
    help = (
        "Create an API key for ACCOUNT, creating the account in --tier if it does not exist. "
        "The raw key is printed alone on the last line; it is not stored and cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account", help="Account name.")
        parser.add_argument("--tier", help="Tier name (required when the account is new).")
        parser.add_argument("--name", default="default", help="A name for the key (default: %(default)s).")

    @sensitive_variables()  # The raw key, and the output calls it is passed to.
    @transaction.atomic
    def handle(self, *args: Any, account: str, tier: str | None, name: str, **options: Any) -> None:
        tier_obj = None
        if tier is not None:
            tier_obj = Tier.objects.filter(name__iexact=tier).first()
            if tier_obj is None:
                names = ", ".join(Tier.objects.values_list("name", flat=True))
                raise CommandError(f"Unknown tier {tier!r}. Tiers: {names}.")
        account_obj = Account.objects.filter(name=account).first()
        if account_obj is None:
            if tier_obj is None:
                raise CommandError(f"Account {account!r} does not exist; pass --tier to create it.")
            account_obj = Account.objects.create(name=account, tier=tier_obj)
            self.stderr.write(f"Created account {account!r} in tier {tier_obj.name}.")
        elif tier_obj is not None and account_obj.tier_id != tier_obj.pk:
            raise CommandError(
                f"Account {account!r} is in tier {account_obj.tier.name}, not {tier_obj.name}; "
                "change tiers in the admin."
            )
        key, raw_key = APIKey.objects.create_key(account=account_obj, name=name)
        self.stderr.write(f"Created key {key.prefix} ({name}) for {account_obj.name}. Store it now:")
        self.stdout.write(raw_key)
