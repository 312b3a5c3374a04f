from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import Account, APIKey, Tier
from ratelimit_tiers.storage import get_storage


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "limit",
        "window_seconds",
        "read_limit",
        "write_limit",
        "delete_limit",
        "auth_limit",
        "algorithm",
    ]
    list_editable = ["limit"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "description", "limit", "window_seconds", "algorithm"]}),
        (
            _("Per-category limits"),
            {
                "fields": ["read_limit", "write_limit", "delete_limit", "auth_limit"],
                "description": _("Leave empty to use the tier's limit."),
            },
        ),
    ]


class APIKeyInline(admin.TabularInline):
    model = APIKey
    fields = ["name", "prefix", "created", "last_used", "expires_at", "revoked"]
    readonly_fields = ["name", "prefix", "created", "last_used", "expires_at", "revoked"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # Keys are issued from the API key page, which shows the secret once.


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "tier", "limit_override", "is_active", "key_count", "created"]
    list_filter = ["tier", "is_active"]
    search_fields = ["name"]
    inlines = [APIKeyInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        queryset: QuerySet[Account] = super().get_queryset(request)
        return queryset.select_related("tier").annotate(_key_count=Count("api_keys"))

    @admin.display(description=_("keys"), ordering="_key_count")
    def key_count(self, obj: Any) -> int:
        return int(obj._key_count)


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "account",
        "created",
        "last_used",
        "expires_at",
        "has_expired",
        "revoked",
    ]
    list_filter = ["revoked", "account__tier"]
    search_fields = ["name", "prefix", "account__name"]
    list_select_related = ["account"]
    readonly_fields = ["prefix", "created", "last_used"]
    actions = ["revoke_keys", "reset_counters"]

    @admin.display(description=_("expired"), boolean=True)
    def has_expired(self, obj: APIKey) -> bool:
        return obj.has_expired

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("account")
            if obj.revoked:
                fields += ["name", "expires_at", "revoked"]  # A revoked key is locked.
        return fields

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            raw_key = APIKey.objects.assign_key(obj)
            obj.save()
            messages.warning(
                request,
                _("The API key for %(name)s is: %(key)s. Copy it now: it will not be shown again.")
                % {"name": obj.name, "key": raw_key},
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description=_("Revoke selected keys (cannot be undone)"))
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = 0
        for key in queryset.filter(revoked=False):
            key.revoked = True
            key.save(update_fields=["revoked"])  # save(), not update(): evicts the cached policy.
            count += 1
        self.message_user(request, _("Revoked %(count)d key(s).") % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Reset the rate-limit counters of selected keys"))
    def reset_counters(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        storage = get_storage()
        try:
            for prefix in queryset.values_list("prefix", flat=True):
                storage.clear(prefix)
        except StorageUnavailable as exc:
            self.message_user(
                request, _("The rate-limit store is unavailable: %(error)s") % {"error": exc}, messages.ERROR
            )
            return
        self.message_user(request, _("Counters reset."), messages.SUCCESS)
