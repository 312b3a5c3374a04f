"""The account admin: its overrides inline, its effective rules, and its keys with their live usage."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers.admin.account_charts import usage_charts
from ratelimit_tiers.admin.pages import page_url
from ratelimit_tiers.admin.rules import OverrideInline, rules_table
from ratelimit_tiers.admin.throttled import throttled_view
from ratelimit_tiers.admin.usage import RULES_PREFETCH, KeyColumns
from ratelimit_tiers.admin.usage_columns import BY_ACCOUNT, AccountThrottledFilter, UsageColumns
from ratelimit_tiers.models import Account, APIKey


class APIKeyInline(KeyColumns, admin.TabularInline):
    model = APIKey
    fields = ["name", "prefix", "status", "usage", "last_used", "expires_at"]
    readonly_fields = ["name", "prefix", "status", "usage", "last_used", "expires_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIKey]:
        queryset: QuerySet[APIKey] = super().get_queryset(request)
        return queryset.select_related("account__tier").prefetch_related(*RULES_PREFETCH)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # Keys are issued from the API key page, which shows the secret once.


@admin.register(Account)
class AccountAdmin(UsageColumns, admin.ModelAdmin):
    list_display = [
        "name",
        "tier",
        "is_active",
        "key_count",
        "requests_today",
        "refused_today",
        "last_throttled",
        "created",
    ]
    list_filter = ["tier", "is_active", "tier__shadow", AccountThrottledFilter]
    search_fields = ["name", "api_keys__prefix", "api_keys__name"]
    readonly_fields = ["effective_rules", "usage_charts"]
    inlines = [OverrideInline, APIKeyInline]
    change_list_template = "admin/ratelimit_tiers/account/change_list.html"
    grouping = BY_ACCOUNT

    def get_urls(self) -> list[URLPattern]:
        throttled = page_url(self, "throttled/", throttled_view, "ratelimit_tiers_account_throttled")
        return [throttled, *super().get_urls()]

    def row_value(self, obj: Account) -> int:
        return obj.pk

    def account_id(self, obj: Account) -> int:
        return obj.pk

    @admin.display(description=_("usage (UTC)"))
    def usage_charts(self, obj: Account) -> SafeString:
        """Admitted and refused requests per hour (48 hours) and per day (90 days), as SVG."""
        if obj.pk is None:
            return format_html("<em>{}</em>", gettext("Shown once the account is saved."))
        return usage_charts(obj.pk)

    @admin.display(description=_("effective rules"))
    def effective_rules(self, obj: Account) -> SafeString:
        """The rules its keys meet now: the tier's, each replaced by an override of the same identity
        until it ends, plus the account's others; with their origin and end."""
        if obj.pk is None:
            return format_html("<em>{}</em>", gettext("Shown once the account is saved."))
        return rules_table(obj.effective_rules())

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        queryset: QuerySet[Account] = super().get_queryset(request)
        return queryset.select_related("tier").annotate(_key_count=Count("api_keys"))

    @admin.display(description=_("keys"), ordering="_key_count")
    def key_count(self, obj: Any) -> int:
        return int(obj._key_count)
