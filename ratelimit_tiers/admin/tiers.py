"""The tier admin: its limit rules inline, listed compactly, and which algorithm each runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers.admin.rules import LimitRuleInline, compact_rates
from ratelimit_tiers.algorithms import EXACT_MAX_LIMIT
from ratelimit_tiers.conf import conf
from ratelimit_tiers.models import Tier
from ratelimit_tiers.rule_columns import algorithm_in_use


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ["name", "limits", "shadow", "account_count"]
    list_filter = ["shadow"]
    search_fields = ["name"]
    fields = ["name", "description", "algorithm_in_use", "shadow"]
    readonly_fields = ["algorithm_in_use"]
    inlines = [LimitRuleInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tier]:
        queryset: QuerySet[Tier] = super().get_queryset(request)
        return queryset.annotate(_account_count=Count("accounts")).prefetch_related("rules")

    @admin.display(description=_("accounts"), ordering="_account_count")
    def account_count(self, obj: Any) -> int:
        return int(obj._account_count)

    @admin.display(description=_("limit rules"))
    def limits(self, obj: Tier) -> str:
        return compact_rates(rule.as_rule() for rule in obj.rules.all())

    @admin.display(description=_("algorithm in use"))
    def algorithm_in_use(self, obj: Tier) -> str:
        """What the store runs for the sliding windows: the exact log keeps at most EXACT_MAX_LIMIT stamps."""
        note = gettext(
            "The exact log keeps at most %(count)s requests per window; larger limits use the counter."
        )
        note %= {"count": f"{EXACT_MAX_LIMIT:,}"}
        if obj.pk is None:
            return note
        windows = [rule.as_rule() for rule in obj.rules.all() if not rule.calendar]
        switched = [r.name for r in windows if algorithm_in_use(r) != (r.algorithm or conf.ALGORITHM)]
        if not switched:
            return f"{conf.ALGORITHM}. {note}"
        used = gettext("%(algorithm)s, but counter for %(rules)s.")
        return f"{used % {'algorithm': conf.ALGORITHM, 'rules': ', '.join(switched)}} {note}"
