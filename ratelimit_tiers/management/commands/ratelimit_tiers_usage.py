"""``manage.py ratelimit_tiers_usage``: each key's live usage from the store; ``--csv``: the billing CSV."""

from __future__ import annotations

import csv
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ratelimit_tiers import categories, usage
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.management.table import format_table
from ratelimit_tiers.models import Account, APIKey
from ratelimit_tiers.storage import Unusable, get_storage

COLUMNS = ("account", "key", "name", "status", "category", "rule", "limit", "remaining", "reset")


class Command(BaseCommand):
    help = (
        "Show each API key's usage in its current window, per endpoint category, as the limiter "
        "store sees it right now: limit, remaining, and seconds until remaining grows (reset). "
        "Nothing is counted by looking. With --csv: the usage ledger's requests per key, category "
        "and UTC day of the last --days days, as billing reads them (hours not rolled up included)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", metavar="NAME", help="Only this account's keys.")
        parser.add_argument(
            "--csv", action="store_true", help="Print the usage ledger's CSV (date,account,key_prefix,...)."
        )
        parser.add_argument(
            "--days",
            type=int,
            default=1,
            metavar="N",
            help="With --csv: the last N UTC days, today included.",
        )

    def handle(self, *args: Any, account: str | None, **options: Any) -> None:
        if account is not None and not Account.objects.filter(name=account).exists():
            raise CommandError(f"Unknown account {account!r}.")
        if options["csv"]:
            self.write_csv(account, options["days"])
            return
        if options["days"] != 1:
            raise CommandError("--days goes with --csv: the live view shows the current windows.")
        keys = APIKey.objects.select_related("account__tier").order_by("account__name", "created")
        if account is not None:
            keys = keys.filter(account__name=account)
        storage = get_storage()
        rows: list[tuple[str, ...]] = []
        try:
            for key in keys:
                for category in categories.in_use(key.account.effective_rules()):
                    outcome = storage.peek(key.prefix, key.account_id, category)
                    base = (key.account.name, key.prefix, key.name, key.status, category)
                    if isinstance(outcome, Unusable):
                        rows.append((*base, "-", "-", "-", "-"))
                        continue
                    for decision in outcome.decisions:
                        reset = max(0, math.ceil(decision.reset_at - time.time()))
                        rows.append(
                            (
                                *base,
                                decision.policy,
                                str(decision.limit),
                                str(decision.remaining),
                                f"{reset}s",
                            )
                        )
        except StorageUnavailable as exc:
            raise CommandError(f"The rate-limit store is unavailable: {exc}") from exc
        if not rows:
            self.stdout.write("No API keys.")
            return
        for line in format_table(COLUMNS, rows):
            self.stdout.write(line)

    def write_csv(self, account: str | None, days: int) -> None:
        if days < 1:
            raise CommandError("--days must be at least 1.")
        until = datetime.now(timezone.utc).date()
        accounts = (
            None if account is None else Account.objects.filter(name=account).values_list("pk", flat=True)
        )
        writer = csv.writer(self.stdout, lineterminator="\n")
        try:
            rows = list(usage.csv_rows(until - timedelta(days=days - 1), until, accounts))
        except StorageUnavailable as exc:
            raise CommandError(f"The rate-limit store is unavailable (usage unavailable): {exc}") from exc
        writer.writerows(rows)
