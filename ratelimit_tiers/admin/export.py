"""The CSV export of a range of UTC days, for billing: a small form, then the rows of
``usage.csv_rows`` streamed (``date,account,key_prefix,category,admitted,refused``).

Needs the view permission on daily usage (``ratelimit_tiers.view_dailyusage``): the CSV holds every
account's and key's counts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date, timedelta
from itertools import chain
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers import usage
from ratelimit_tiers.admin.usage_columns import utc_today
from ratelimit_tiers.exceptions import StorageUnavailable

#: The longest range one export covers, in days.
MAX_DAYS = 366


class ExportForm(forms.Form):
    start = forms.DateField(label=_("first day (UTC)"), widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("last day (UTC)"), widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start is None or end is None:
            return cleaned
        if start > end:
            raise ValidationError(_("The first day comes after the last."), code="reversed")
        if end > utc_today():
            raise ValidationError(_("The last day is in the future (UTC)."), code="future")
        if (end - start).days + 1 > MAX_DAYS:
            raise ValidationError(
                _("At most %(days)d days per export."), code="too_long", params={"days": MAX_DAYS}
            )
        return cleaned


class Echo:
    """A file-like object whose ``write`` returns what it was given, for ``csv.writer``."""

    def write(self, value: str) -> str:
        return value


def stream(start: date, end: date) -> Iterator[str]:
    """The CSV's lines. Raises ``StorageUnavailable`` before the first line, not in the middle."""
    rows = usage.csv_rows(start, end)
    # Read the header and the first row now: a store that does not answer is then a page with a
    # message, not a response cut short.
    first = [next(rows, None), next(rows, None)]
    writer = csv.writer(Echo())
    return (writer.writerow(row) for row in chain((r for r in first if r is not None), rows))


def export_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponseBase:
    """GET without dates: the form; with valid dates: the CSV, as an attachment."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    today = utc_today()
    bound = "start" in request.GET or "end" in request.GET
    form = ExportForm(
        request.GET if bound else None, initial={"start": today - timedelta(days=30), "end": today}
    )
    error = None
    if bound and form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        try:
            lines = stream(start, end)
        except StorageUnavailable:
            error = gettext("Usage unavailable: the rate-limit store does not answer; try again later.")
        else:
            response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
            return response
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": gettext("Export usage as CSV"),
        "form": form,
        "error": error,
    }
    return TemplateResponse(request, "admin/ratelimit_tiers/dailyusage/export.html", context)
