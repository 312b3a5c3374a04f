"""What ``ratelimit_tiers_limits`` works on: a rule's owner (a tier or an account) and its RATE text."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ratelimit_tiers.models import Account, Tier
from ratelimit_tiers.rules import parse_limit


def get_owner(tier: str | None, account: str | None) -> Tier | Account:
    """The tier named ``tier`` (any case) or the account named ``account`` (exactly); one of them."""
    if (tier is None) == (account is None):
        raise CommandError("Name a TIER, or an account with --account NAME (not both).")
    if account is not None:
        found = Account.objects.select_related("tier").filter(name=account).first()
        if found is None:
            raise CommandError(f"Unknown account {account!r}.")
        return found
    tier_obj = Tier.objects.filter(name__iexact=tier).first()
    if tier_obj is None:
        names = ", ".join(Tier.objects.values_list("name", flat=True))
        raise CommandError(f"Unknown tier {tier!r}. Tiers: {names}.")
    return tier_obj


def parse_rate(text: str) -> tuple[int, int, str]:
    """``parse_limit``, its ``ValueError`` as a ``CommandError``."""
    try:
        return parse_limit(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def parse_period(text: str) -> tuple[int, str]:
    """The period of a rule to remove, from RATE text or from a period alone (``/day``, ``/min``, ``day``)."""
    if not text.strip()[:1].isdigit():
        text = "1" + (text if text.strip().startswith("/") else f"/{text}")
    _count, window, calendar = parse_rate(text)
    return window, calendar


def parse_until(text: str) -> datetime:
    """An ISO 8601 time (in the current time zone when it names none) that is still to come."""
    # Django's parser, not datetime.fromisoformat: Python 3.10's refuses a "Z" for UTC.
    try:
        moment = parse_datetime(text.strip())
    except ValueError:  # Well formed, but no such time (e.g. a 13th month).
        moment = None
    if moment is None:
        example = "2026-12-31T23:59:59+00:00"
        raise CommandError(f"--until {text!r} is not an ISO 8601 time, e.g. {example}.")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    if moment <= timezone.now():
        raise CommandError(f"--until {text!r} has passed: the override would never apply.")
    return moment


def errors_of(exc: ValidationError) -> str:
    """A model's validation errors on one line, each with its field."""
    if hasattr(exc, "error_dict"):
        return " ".join(
            f"{field}: {message}" if field != "__all__" else message
            for field, messages in exc.message_dict.items()
            for message in messages
        )
    return " ".join(exc.messages)
