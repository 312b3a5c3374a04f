"""``manage.py ratelimit_tiers_rollup``: finished hours of the usage ledger into ``DailyUsage``, each once."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils.dateparse import parse_datetime

from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.rollup import GRACE_SECONDS, roll_up
from ratelimit_tiers.usage import hour_start


class Command(BaseCommand):
    help = (
        "Add the usage ledger's finished hours (ended more than "
        f"{GRACE_SECONDS // 60} minutes ago) to the daily usage rows, each hour once: safe to run "
        "from cron every few minutes, on several hosts at once. An hour that fails stays for the next run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--now",
            metavar="ISO8601",
            help="Roll up as if it were this time (UTC unless it says otherwise): for tests and drills. "
            "A time ahead of the clock rolls up hours whose later requests would then never be added.",
        )

    def handle(self, *args: Any, now: str | None, **options: Any) -> None:
        at = None if now is None else _parse(now).timestamp()

        def report(hour: int, rolled: bool) -> None:
            if options["verbosity"] >= 2:
                state = "rolled up" if rolled else "already rolled up by another run"
                self.stdout.write(f"{hour_start(hour).isoformat()}: {state}")

        try:
            done = roll_up(at, report)
        except (StorageUnavailable, DatabaseError) as exc:
            raise CommandError(
                f"Rollup stopped: {exc}. The hours not rolled up stay in the store for the next run."
            ) from exc
        if done.lost:
            first, last = hour_start(done.lost[0]), hour_start(done.lost[-1])
            self.stderr.write(
                f"Warning: {len(done.lost)} hours from {first.isoformat()} to {last.isoformat()} were never "
                "rolled up and the store no longer keeps them (RATELIMIT_TIERS_LEDGER_DAYS): their usage "
                "is lost. Run this command more often than that."
            )
        self.stdout.write(f"Rolled up {len(done.rolled)} hours ({len(done.taken)} taken by another run).")


def _parse(text: str) -> datetime:
    parsed = parse_datetime(text)
    if parsed is None:
        raise CommandError(f"--now {text!r} is not an ISO 8601 date and time.")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
