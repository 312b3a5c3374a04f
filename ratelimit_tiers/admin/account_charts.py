"""An account's usage charts: admitted and refused requests per UTC hour (48 hours) and per UTC day
(90 days), read through ``usage.hourly`` and ``usage.daily`` and drawn as SVG (:mod:`.charts`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from ratelimit_tiers import usage
from ratelimit_tiers.admin.charts import Bar, Chart, Series, render
from ratelimit_tiers.exceptions import StorageUnavailable

HOURS = 48
DAYS = 90
ADMITTED_COLOR = "#417690"  # The admin's own blue and red.
REFUSED_COLOR = "#ba2121"


def sums(rows: Iterable[usage.Usage]) -> dict[datetime, tuple[int, int]]:
    """Admitted and refused per start (hour or day), all keys and categories together."""
    found: dict[datetime, tuple[int, int]] = {}
    for row in rows:
        admitted, refused = found.get(row.start, (0, 0))
        found[row.start] = (admitted + row.admitted, refused + row.refused)
    return found


def this_hour(now: datetime) -> datetime:
    return now.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def chart(ident: str, title: str, description: str, bars: tuple[Bar, ...], step: int) -> Chart:
    """``description`` names the first and last bars as ``%(first)s`` and ``%(last)s``."""
    admitted, refused = (
        Series(gettext("admitted"), ADMITTED_COLOR),
        Series(gettext("refused (429)"), REFUSED_COLOR),
    )
    text = description % {"first": bars[0].name, "last": bars[-1].name}
    return Chart(ident, title, text, (admitted, refused), bars, step)


def hourly_chart(account_id: int, now: datetime) -> Chart:
    """The last :data:`HOURS` UTC hours, the current one included. Raises ``StorageUnavailable``."""
    first = this_hour(now) - timedelta(hours=HOURS - 1)
    found = sums(usage.hourly(first, first + timedelta(hours=HOURS), [account_id]))
    hours = [first + timedelta(hours=i) for i in range(HOURS)]
    return chart(
        f"rlt-hourly-{account_id}",
        gettext("Requests per hour, last %(hours)d hours (UTC)") % {"hours": HOURS},
        gettext("Admitted and refused requests per UTC hour, from %(first)s to %(last)s."),
        tuple(
            Bar(
                f"{hour:%Y-%m-%d %H:00} UTC",
                f"{hour:%H}h" if hour.hour % 6 == 0 else "",
                found.get(hour, (0, 0)),
            )
            for hour in hours
        ),
        step=12,
    )


def daily_chart(account_id: int, today: date) -> Chart:
    """The last :data:`DAYS` UTC days, today included. Raises ``StorageUnavailable``."""
    first = today - timedelta(days=DAYS - 1)
    found = {start.date(): counts for start, counts in sums(usage.daily(first, today, [account_id])).items()}
    days = [first + timedelta(days=i) for i in range(DAYS)]
    return chart(
        f"rlt-daily-{account_id}",
        gettext("Requests per day, last %(days)d days (UTC)") % {"days": DAYS},
        gettext("Admitted and refused requests per UTC day, from %(first)s to %(last)s."),
        tuple(
            Bar(f"{day:%Y-%m-%d}", f"{day:%b %d}" if day.day in (1, 15) else "", found.get(day, (0, 0)))
            for day in days
        ),
        step=7,
    )


def usage_charts(account_id: int, now: datetime | None = None) -> SafeString:
    """Both charts, each with its heading; "usage unavailable" in place of a chart the store cannot
    answer for."""
    moment = timezone.now() if now is None else now
    builders: list[Callable[[], Chart]] = [
        lambda: hourly_chart(account_id, moment),
        lambda: daily_chart(account_id, this_hour(moment).date()),
    ]
    parts = []
    for build in builders:
        try:
            chart = build()
        except StorageUnavailable:
            parts.append(
                format_html(
                    '<p class="rlt-usage-unavailable"><em>{}</em></p>',
                    gettext("Usage unavailable: the rate-limit store does not answer."),
                )
            )
            continue
        svg = mark_safe(render(chart))  # noqa: S308  # render() escapes every text it draws.
        parts.append(format_html('<h3 class="rlt-chart-title">{}</h3>{}', chart.title, svg))
    return format_html('<div class="rlt-charts">{}</div>', mark_safe("".join(parts)))  # noqa: S308
