"""Usage columns in the account and key lists (requests and 429s today, last throttled) and a
"throttled" filter. A page's rows are looked up together, once: one ``usage.daily`` call and one
aggregate query for the last refusals, whatever the number of rows. Days are UTC days."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers import usage
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import DailyUsage

#: The attribute of each row's object that carries its :class:`Today` (or None: usage unavailable).
ATTRIBUTE = "_rlt_today"
TODAY, WEEK, NEVER = "today", "7d", "never"


@dataclass(frozen=True)
class Today:
    requests: int  # admitted and refused
    refused: int
    last_throttled: datetime | None  # ever, not only today


def utc_today() -> date:
    return timezone.now().astimezone(dt_timezone.utc).date()


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return a if b is None or (a is not None and a > b) else b


@dataclass(frozen=True)
class Grouping:
    """How rows group: by account (``account_id``) or by key (``prefix``, ``key_prefix`` in SQL)."""

    attribute: str  # of usage.Usage
    column: str  # of DailyUsage

    def today(self, account_ids: Iterable[int], values: Iterable[Any]) -> dict[Any, Today]:
        """Today's counts and the last refusal ever, for ``values`` of the grouping. Raises
        ``StorageUnavailable``."""
        values = set(values)
        counts: dict[Any, tuple[int, int, datetime | None]] = {}
        for row in usage.daily(utc_today(), utc_today(), sorted(set(account_ids))):
            value = getattr(row, self.attribute)
            requests, refused, last = counts.get(value, (0, 0, None))
            counts[value] = (
                requests + row.admitted + row.refused,
                refused + row.refused,
                latest(last, row.last_refused),
            )
        past = dict(
            DailyUsage.objects.filter(**{f"{self.column}__in": values}, last_refused__isnull=False)
            .values_list(self.column)
            .annotate(Max("last_refused"))
        )
        found = {}
        for value in values:
            requests, refused, last = counts.get(value, (0, 0, None))
            found[value] = Today(requests, refused, latest(last, past.get(value)))
        return found

    def refused_since(self, since: date) -> tuple[set[Any], bool]:
        """The values with a refusal from ``since`` to today, and whether the store answered
        (if not: from the rolled-up days only)."""
        try:
            rows = usage.daily(since, utc_today())
        except StorageUnavailable:
            rolled = DailyUsage.objects.filter(day__gte=since, refused__gt=0)
            return set(rolled.values_list(self.column, flat=True)), False
        return {getattr(row, self.attribute) for row in rows if row.refused}, True

    def refused_ever(self) -> tuple[set[Any], bool]:
        """As :meth:`refused_since`, over every rolled-up day and the store's last 7 days."""
        recent, answered = self.refused_since(utc_today() - timedelta(days=6))
        rolled = DailyUsage.objects.filter(refused__gt=0).values_list(self.column, flat=True).distinct()
        return recent | set(rolled), answered


BY_ACCOUNT = Grouping("account_id", "account_id")
BY_KEY = Grouping("prefix", "key_prefix")


class UsageChangeList(ChangeList):
    """Looks up the page's usage once its rows are known, and hands each row its :class:`Today`."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)  # Fills the queryset's cache: the template iterates these objects.
        self.model_admin.attach_today(rows)  # type: ignore[attr-defined]


class UsageColumns:
    """ModelAdmin mixin: the columns ``requests_today``, ``refused_today`` and ``last_throttled``."""

    grouping: Grouping

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return UsageChangeList

    def row_value(self, obj: Any) -> Any:
        """The row's value of the grouping (an account's id, a key's prefix)."""
        raise NotImplementedError

    def account_id(self, obj: Any) -> int:
        raise NotImplementedError

    def attach_today(self, rows: list[Model]) -> None:
        try:
            found: dict[Any, Today] | None = self.grouping.today(
                [self.account_id(obj) for obj in rows], [self.row_value(obj) for obj in rows]
            )
        except StorageUnavailable:
            found = None
        for obj in rows:
            setattr(obj, ATTRIBUTE, None if found is None else found[self.row_value(obj)])

    @admin.display(description=_("requests today"))
    def requests_today(self, obj: Model) -> SafeString | int:
        today: Today | None = getattr(obj, ATTRIBUTE, None)
        return unavailable() if today is None else today.requests

    @admin.display(description=_("429s today"))
    def refused_today(self, obj: Model) -> SafeString | int:
        today: Today | None = getattr(obj, ATTRIBUTE, None)
        return unavailable() if today is None else today.refused

    @admin.display(description=_("last throttled"))
    def last_throttled(self, obj: Model) -> SafeString | datetime | None:
        today: Today | None = getattr(obj, ATTRIBUTE, None)
        return unavailable() if today is None else today.last_throttled


def unavailable() -> SafeString:
    return format_html('<em class="rlt-usage-unavailable">{}</em>', gettext("usage unavailable"))


class ThrottledFilter(admin.SimpleListFilter):
    """Rows with a 429 today, in the last 7 UTC days (today included), or never."""

    title = _("throttled")
    parameter_name = "throttled"
    grouping: Grouping
    field: str  # the model's field that holds the grouping's value

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(TODAY, _("today")), (WEEK, _("in the last 7 days")), (NEVER, _("never"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == NEVER:
            values, answered = self.grouping.refused_ever()
        elif value in (TODAY, WEEK):
            since = utc_today() - timedelta(days=0 if value == TODAY else 6)
            values, answered = self.grouping.refused_since(since)
        else:
            return queryset
        if not answered:
            messages.warning(
                request,
                gettext(
                    "Usage unavailable: the rate-limit store does not answer; "
                    "filtered on the rolled-up days only."
                ),
            )
        lookup = {f"{self.field}__in": values}
        return queryset.exclude(**lookup) if value == NEVER else queryset.filter(**lookup)


class AccountThrottledFilter(ThrottledFilter):
    grouping = BY_ACCOUNT
    field = "pk"


class KeyThrottledFilter(ThrottledFilter):
    grouping = BY_KEY
    field = "prefix"
