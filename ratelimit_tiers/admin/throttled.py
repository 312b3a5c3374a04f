"""The "Throttled most" page: accounts by refused requests over the last 24 hours and the last 7 days,
with their tier and peak share of quota used (:mod:`.peak_share`): the upsell list.

The last 24 hours are the current UTC hour and the 23 before it, from ``usage.hourly``; the last 7 days
are today and the 6 UTC days before it, from ``usage.daily`` (rolled-up days and the store's hours not
rolled up yet). Peak shares are over the same period's hours that the store still keeps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers import usage
from ratelimit_tiers.admin.account_charts import this_hour
from ratelimit_tiers.admin.peak_share import peak_share
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import Account

#: Accounts listed per period.
LIMIT = 50
#: Those that let a user export (the daily usage admin's view permission: view, or change as in Django).
EXPORT_PERMISSIONS = ("ratelimit_tiers.view_dailyusage", "ratelimit_tiers.change_dailyusage")


@dataclass(frozen=True)
class Throttled:
    account: Account
    refused: int
    admitted: int
    peak_share: float | None  # 1.0 is 100%

    @property
    def peak_percent(self) -> str:
        return "—" if self.peak_share is None else f"{self.peak_share:.0%}"


@dataclass(frozen=True)
class Period:
    title: Any
    rows: list[Throttled]


def most_refused(counted: Iterable[usage.Usage]) -> list[tuple[int, int, int]]:
    """``(account id, refused, admitted)`` of the accounts with a refusal in ``counted``, most refused
    first, at most :data:`LIMIT`."""
    totals: dict[int, tuple[int, int]] = {}
    for row in counted:
        if row.account_id is not None:
            refused, admitted = totals.get(row.account_id, (0, 0))
            totals[row.account_id] = (refused + row.refused, admitted + row.admitted)
    ranked = sorted((-refused, pk, admitted) for pk, (refused, admitted) in totals.items() if refused)
    return [(pk, -refused, admitted) for refused, pk, admitted in ranked[:LIMIT]]


def rank(counted: Iterable[usage.Usage], hours: Iterable[usage.Usage]) -> list[Throttled]:
    """:func:`most_refused` of ``counted``, each account with its tier and its peak share over ``hours``."""
    top = most_refused(counted)
    by_account: dict[int | None, list[usage.Usage]] = defaultdict(list)
    for row in hours:
        by_account[row.account_id].append(row)
    accounts = Account.objects.select_related("tier").prefetch_related("rules", "tier__rules")
    found = accounts.in_bulk([pk for pk, _, _ in top])
    return [
        Throttled(
            found[pk],
            refused=refused,
            admitted=admitted,
            peak_share=peak_share(by_account[pk], found[pk].effective_rules()),
        )
        for pk, refused, admitted in top
        if pk in found  # An account deleted meanwhile.
    ]


def periods(now: datetime) -> list[Period]:
    """The two tables. Raises ``StorageUnavailable``.

    The store's hours are read only for the accounts that may be listed: over 24 hours for those
    with a refusal since yesterday (UTC), over 7 days for those listed (their peak shares)."""
    hour = this_hour(now)
    first_hour = hour - timedelta(hours=23)
    week_days = usage.daily(hour.date() - timedelta(days=6), hour.date())
    recent = {row.account_id for row in week_days if row.refused and row.start.date() >= first_hour.date()}
    day_hours = usage.hourly(first_hour, hour + timedelta(hours=1), sorted(pk for pk in recent if pk))
    listed = {pk for pk, _, _ in most_refused(week_days)}
    week_hours = usage.hourly(hour - timedelta(hours=7 * 24 - 1), hour + timedelta(hours=1), sorted(listed))
    return [
        Period(_("Last 24 hours"), rank(day_hours, day_hours)),
        Period(_("Last 7 days"), rank(week_days, week_hours)),
    ]


def throttled_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> TemplateResponse:
    """Needs the view (or change) permission on accounts."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        tables: list[Period] | None = periods(timezone.now())
    except StorageUnavailable:
        tables = None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": gettext("Throttled most"),
        "periods": tables,
        "can_export": any(request.user.has_perm(permission) for permission in EXPORT_PERMISSIONS),
    }
    return TemplateResponse(request, "admin/ratelimit_tiers/account/throttled.html", context)
