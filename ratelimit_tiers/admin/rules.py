"""Limit rules in the admin: edited inline on a tier and on an account, as RATE text, and shown as tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers import rule_columns
from ratelimit_tiers.models import LimitRule
from ratelimit_tiers.rules import ACCOUNT, Rule, parse_limit

RATE_HELP = _(
    "COUNT/PERIOD: 10/s, 60/min, 100/10s, 1000/24h (sliding windows), 1000/day, 5000/week, 100000/month."
)


class LimitRuleForm(forms.ModelForm):
    """A rule with its count and period typed as RATE text (``1000/day``), not as seconds and a calendar."""

    rate = forms.CharField(label=_("rate"), max_length=40, help_text=RATE_HELP)

    class Meta:
        model = LimitRule
        fields = ["category", "rate", "scope", "algorithm"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["rate"] = self.instance.as_rule().rate

    def clean_rate(self) -> str:
        rate: str = self.cleaned_data["rate"]
        try:
            count, window, calendar = parse_limit(rate)
        except ValueError as exc:
            raise ValidationError(
                gettext("Not a rate: %(rate)s. Write COUNT/PERIOD, e.g. 60/min, 100/10s or 1000/day."),
                code="invalid_rate",
                params={"rate": rate},
            ) from exc
        # The model validates them with the rest (clean(), and the formset's identities).
        self.instance.count, self.instance.window_seconds, self.instance.calendar = count, window, calendar
        return rate

    def _post_clean(self) -> None:
        if self.has_error("rate"):
            return  # No count or period to validate the rule with: the rate's own message says why.
        super()._post_clean()  # type: ignore[misc]  # Django API that django-stubs does not declare.


class LimitRuleFormSet(BaseInlineFormSet):
    """Refuses two rules of one owner with one category, period and scope: one would replace the other."""

    def clean(self) -> None:
        super().clean()
        seen: dict[tuple[str, str, str], str] = {}
        for form in self.forms:
            if not form.is_valid() or (form.instance.pk is None and not form.has_changed()):
                continue
            if self.can_delete and form.cleaned_data.get("DELETE"):
                continue
            rule = form.instance.as_rule()
            if rule.identity in seen:
                raise ValidationError(
                    gettext(
                        "Two rules for %(category)s, %(period)s, per %(scope)s (%(first)s and %(second)s): "
                        "keep one."
                    ),
                    code="duplicate_rule",
                    params={
                        "category": rule.category or gettext("every category"),
                        "period": rule.period,
                        "scope": rule.scope,
                        "first": seen[rule.identity],
                        "second": rule.rate,
                    },
                )
            seen[rule.identity] = rule.rate


class LimitRuleInline(admin.TabularInline):
    model = LimitRule
    form = LimitRuleForm
    formset = LimitRuleFormSet
    fields = ["category", "rate", "scope", "algorithm", "name"]
    readonly_fields = ["name"]
    extra = 0

    @admin.display(description=_("rate"))
    def rate(self, obj: LimitRule) -> str:
        """The RATE text, for staff who may only view the rules (a form field for the others)."""
        return obj.as_rule().rate if obj.pk is not None else ""

    @admin.display(description=_("name in headers"))
    def name(self, obj: LimitRule) -> str:
        return obj.as_rule().name if obj.pk is not None else ""


class OverrideInline(LimitRuleInline):
    fields = ["category", "rate", "scope", "algorithm", "until", "name"]
    verbose_name = _("override")
    verbose_name_plural = _("overrides (replace the tier's rule of the same category, period and scope)")


def rules_table(rules: Iterable[Rule]) -> SafeString:
    """The rules as a table under :data:`rule_columns.COLUMNS`."""
    rows = [rule_columns.columns(rule) for rule in rules]
    if not rows:
        return format_html("<em>{}</em>", gettext("No rules: requests are not limited."))
    head = format_html_join("", "<th>{}</th>", ((title,) for title in rule_columns.COLUMNS))
    body = format_html_join(
        "",
        '<tr class="rlt-rule">{}</tr>',
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html(
        '<table class="rlt-rules"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body
    )


def compact_rates(rules: Iterable[Rule]) -> str:
    """``60/min · 1000/day · search 10/min · 100/min per account``: a tier's rules on one line."""
    parts = []
    for rule in rules:
        text = f"{rule.category} {rule.rate}" if rule.category else rule.rate
        parts.append(f"{text} {gettext('per account')}" if rule.scope == ACCOUNT else text)
    return " · ".join(parts) or "—"
