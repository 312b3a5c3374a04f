"""``manage.py ratelimit_tiers_limits``: show, set and remove the limit rules of a tier or an account."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from ratelimit_tiers import rule_columns
from ratelimit_tiers.algorithms import ALGORITHMS
from ratelimit_tiers.management.limits import errors_of, get_owner, parse_period, parse_rate, parse_until
from ratelimit_tiers.management.table import format_table
from ratelimit_tiers.models import Account, LimitRule, Tier
from ratelimit_tiers.rules import SCOPES, Rule

RATE_HELP = (
    "COUNT/PERIOD: a sliding window (10/s, 60/min, 5000/h, 100/10s, 1000/24h) or a calendar quota "
    "(1000/day, 5000/week, 100000/month; they reset at midnight, on Monday, on the 1st, in "
    "RATELIMIT_TIERS_QUOTA_TIMEZONE)."
)
IDENTITY_HELP = (
    "A rule is identified by its category, its period and its scope: setting a rule with the identity of "
    "an existing one replaces it, whatever its count."
)


class Command(BaseCommand):
    help = (
        "Show, set or remove the limit rules of a tier, or the overrides of one account (--account NAME). "
        "An account's rule replaces its tier's rule of the same category, period and scope, or adds to "
        "them, until --until if given. Changes apply on the next request, in every process. "
        f"{IDENTITY_HELP} Run 'ratelimit_tiers_limits ACTION --help' for each action."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{show,set,remove}")
        show = actions.add_parser(
            "show",
            help="Print a tier's rules, or the effective rules of an account.",
            description=(
                "Print a tier's rules, or (--account NAME) the rules an account's keys meet now: its "
                "tier's, as replaced or added to by its overrides, with their origin (tier or account) "
                "and the end of each override. One rule per line under a header; 'all' is the rule of "
                "every category without a rule of its own for that period and scope."
            ),
        )
        self._owner_arguments(show)

        set_ = actions.add_parser(
            "set",
            help="Add a rule, or replace the one with the same category, period and scope.",
            description=f"Add a rule to a tier, or an override to an account (--account). {IDENTITY_HELP}",
        )
        self._owner_arguments(set_)
        set_.add_argument("rate", metavar="RATE", help=RATE_HELP)
        self._identity_arguments(set_)
        set_.add_argument(
            "--algorithm",
            choices=ALGORITHMS,
            default="",
            help="For a sliding window only (default: RATELIMIT_TIERS_ALGORITHM); a quota is a counter.",
        )
        set_.add_argument(
            "--until",
            metavar="ISO-8601",
            help=(
                "An account's override only: it stops applying at this time (e.g. 2026-12-31T23:59:59Z; "
                "the current time zone when none is given)."
            ),
        )

        remove = actions.add_parser(
            "remove",
            help="Remove the rule of a period (e.g. /day, or 1000/day), category and scope.",
            description=(
                "Remove one rule of a tier, or one override of an account (--account). The rule is "
                "identified by its period with --category and --scope: 'remove Free /day' and 'remove Free "
                "1000/day' both remove Free's per-key all-categories daily quota, whatever its count; "
                "'remove Free /min --category search' its search rule of 60 seconds."
            ),
        )
        self._owner_arguments(remove)
        remove.add_argument(
            "period", metavar="RATE-or-PERIOD", help="/day, /min, /10s, or a RATE such as 1000/day."
        )
        self._identity_arguments(remove)

    @staticmethod
    def _owner_arguments(parser: CommandParser) -> None:
        parser.add_argument("tier", nargs="?", metavar="TIER", help="The tier's name (any case).")
        parser.add_argument(
            "--account", metavar="NAME", help="An account's overrides instead of a tier's rules."
        )

    @staticmethod
    def _identity_arguments(parser: CommandParser) -> None:
        parser.add_argument(
            "--category",
            default="",
            help="The endpoint category (read, write, delete, auth, or a view's ratelimit_category); "
            "default: every category without a rule of its own.",
        )
        parser.add_argument(
            "--scope",
            choices=SCOPES,
            default="key",
            help="Counted per API key (default), or per account: one count shared by all its keys.",
        )

    def handle(self, *args: Any, action: str, tier: str | None, account: str | None, **options: Any) -> None:
        owner = get_owner(tier, account)
        if action == "show":
            self.show(owner)
        elif action == "set":
            self.set(owner, **options)
        else:
            self.remove(owner, **options)

    def show(self, owner: Tier | Account) -> None:
        if isinstance(owner, Account):
            now = timezone.now().timestamp()
            rules = owner.effective_rules(now)
            for ended in (r.as_rule() for r in owner.rules.all()):
                if ended.until is not None and ended.until <= now:
                    self.stderr.write(f"Ended override, no longer applied: {describe(ended)}.")
        else:
            rules = tuple(rule.as_rule() for rule in owner.rules.all())
        if not rules:
            self.stdout.write(f"No rules: the requests of {title(owner)} are not limited.")
            return
        columns = [str(column) for column in rule_columns.COLUMNS]
        for line in format_table(columns, [rule_columns.columns(rule) for rule in rules]):
            self.stdout.write(line)

    @transaction.atomic
    def set(
        self,
        owner: Tier | Account,
        *,
        rate: str,
        category: str,
        scope: str,
        algorithm: str,
        until: str | None,
        **options: Any,
    ) -> None:
        count, window, calendar = parse_rate(rate)
        if until is not None and isinstance(owner, Tier):
            raise CommandError(
                "--until is for an account's override (--account NAME); a tier's rule does not end."
            )
        rule = find(owner, category, window, calendar, scope)
        before = rule.as_rule() if rule is not None else None
        if rule is None:
            rule = LimitRule(category=category, window_seconds=window, calendar=calendar, scope=scope)
            setattr(rule, owner_field(owner), owner)
        rule.count, rule.algorithm = count, algorithm
        rule.until = parse_until(until) if until is not None else None
        try:
            rule.full_clean()
        except ValidationError as exc:
            raise CommandError(errors_of(exc)) from exc
        rule.save()  # save(): evicts the policies of the keys it applies to.
        if before is None:
            self.stdout.write(f"Added to {title(owner)}: {describe(rule.as_rule())}.")
        else:
            self.stdout.write(f"Changed in {title(owner)}: {describe(before)} -> {describe(rule.as_rule())}.")

    @transaction.atomic
    def remove(
        self, owner: Tier | Account, *, period: str, category: str, scope: str, **options: Any
    ) -> None:
        window, calendar = parse_period(period)
        rule = find(owner, category, window, calendar, scope)
        if rule is None:
            wanted = Rule(1, window, calendar, category, scope).name
            names = ", ".join(r.as_rule().name for r in owner.rules.all()) or "none"
            raise CommandError(f"The {title(owner)} has no rule {wanted}. Its rules: {names}.")
        removed = rule.as_rule()
        rule.delete()  # delete(): evicts the policies of the keys it applied to.
        self.stdout.write(f"Removed from {title(owner)}: {describe(removed)}.")


def owner_field(owner: Tier | Account) -> str:
    return "tier" if isinstance(owner, Tier) else "account"


def title(owner: Tier | Account) -> str:
    return f"{owner_field(owner)} {owner.name}"


def find(owner: Tier | Account, category: str, window: int, calendar: str, scope: str) -> LimitRule | None:
    rules = LimitRule.objects.select_for_update().filter(**{owner_field(owner): owner})
    return rules.filter(category=category, window_seconds=window, calendar=calendar, scope=scope).first()


def describe(rule: Rule) -> str:
    """``all-day 1000/day`` then its algorithm (when chosen) and end (when it has one)."""
    text = f"{rule.name} {rule.rate}"
    if rule.algorithm:
        text += f" ({rule.algorithm})"
    if rule.until is not None:
        text += f" until {rule_columns.until_text(rule.until)}"
    return text
