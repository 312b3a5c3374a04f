"""The ledger's daily rows in the admin, read-only, with the CSV export for billing (:mod:`.export`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern

from ratelimit_tiers.admin.export import export_view
from ratelimit_tiers.admin.pages import page_url
from ratelimit_tiers.models import DailyUsage


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    """Rows are written by ``ratelimit_tiers_rollup`` only: nobody adds, changes or deletes one here."""

    list_display = ["day", "account_name", "key_prefix", "category", "admitted", "refused", "last_refused"]
    list_filter = ["category"]
    search_fields = ["account_name", "key_prefix"]
    date_hierarchy = "day"
    change_list_template = "admin/ratelimit_tiers/dailyusage/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        return [
            page_url(self, "export/", export_view, "ratelimit_tiers_dailyusage_export"),
            *super().get_urls(),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
