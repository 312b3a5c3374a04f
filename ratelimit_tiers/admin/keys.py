"""The API key admin: issuing a key (its secret shown once), rotating, revoking, resetting its counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers import categories
from ratelimit_tiers.admin.usage import RULES_PREFETCH, STATUS_LABELS, KeyColumns
from ratelimit_tiers.admin.usage_columns import BY_KEY, KeyThrottledFilter, UsageColumns
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import KeyStatus
from ratelimit_tiers.signals import counters_reset
from ratelimit_tiers.storage import get_storage

#: Attribute of the ``HttpRequest`` that carries a key added in the admin to its response.
NEW_KEYS_ATTRIBUTE = "ratelimit_tiers_new_keys"


@dataclass(frozen=True)
class NewKey:
    """A key just issued, with its secret, for the one page that shows it."""

    key: APIKey
    raw_key: str = field(repr=False)
    replaces: APIKey | None = None


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return list(STATUS_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> QuerySet[APIKey]:
        now = timezone.now()
        expired = Q(expires_at__isnull=False, expires_at__lte=now)
        live = Q(revoked=False) & ~expired
        filters: dict[str | None, Q] = {
            KeyStatus.REVOKED: Q(revoked=True),
            KeyStatus.EXPIRED: Q(revoked=False) & expired,
            KeyStatus.ROTATING: live & Q(rotated_to__isnull=False),
            KeyStatus.ACTIVE: live & Q(rotated_to__isnull=True),
        }
        value = self.value()
        return queryset.filter(filters[value]) if value in filters else queryset


@admin.register(APIKey)
class APIKeyAdmin(UsageColumns, KeyColumns, admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "account",
        "status",
        "requests_today",
        "refused_today",
        "last_throttled",
        "created",
        "last_used",
        "expires_at",
        "has_expired",
    ]
    list_filter = [StatusFilter, KeyThrottledFilter, "revoked", "account__tier"]
    search_fields = ["name", "prefix", "account__name"]
    list_select_related = ["account"]
    readonly_fields = ["prefix", "status", "created", "last_used", "rotated_to", "usage"]
    actions = ["revoke_keys", "rotate_keys", "reset_counters"]

    grouping = BY_KEY

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIKey]:
        queryset: QuerySet[APIKey] = super().get_queryset(request)
        return queryset.prefetch_related(*RULES_PREFETCH)  # The usage reads the rules.

    def row_value(self, obj: APIKey) -> str:
        return obj.prefix

    def account_id(self, obj: APIKey) -> int:
        return obj.account_id

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None) -> Any:
        if obj is None:  # Adding: the prefix, hash and status do not exist yet.
            return ["account", "name", "expires_at"]
        return [
            "account",
            "name",
            "prefix",
            "status",
            "usage",
            "created",
            "last_used",
            "expires_at",
            "revoked",
            "rotated_to",
        ]

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

    # Adding a key or rotating one answers with a page that shows the new
    # secrets (new_keys_response), never with a redirect and a message: Django's
    # messages travel in a signed but readable cookie.

    @sensitive_variables()
    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            raw_key = APIKey.objects.assign_key(obj)
            obj.save()
            setattr(request, NEW_KEYS_ATTRIBUTE, [NewKey(obj, raw_key)])
            return
        super().save_model(request, obj, form, change)

    @sensitive_variables("new_keys")
    def response_add(self, request: HttpRequest, obj: APIKey, post_url_continue: str | None = None) -> Any:
        new_keys = getattr(request, NEW_KEYS_ATTRIBUTE, None)
        if new_keys is None:
            return super().response_add(request, obj, post_url_continue)
        return self.new_keys_response(request, new_keys)

    @sensitive_variables("new_keys", "context")
    def new_keys_response(self, request: HttpRequest, new_keys: list[NewKey]) -> TemplateResponse:
        """The page that shows new secrets once, kept out of every cache."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Copy the new API keys now"),
            "new_keys": new_keys,
        }
        response = TemplateResponse(request, "admin/ratelimit_tiers/apikey/new_keys.html", context)
        add_never_cache_headers(response)
        return response

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        """Rotating shows a new secret: it takes ``rotate_apikey`` on top of the change permission."""
        opts = self.opts
        return self.has_change_permission(request) and request.user.has_perm(
            f"{opts.app_label}.{get_permission_codename('rotate', opts)}"
        )

    @admin.action(description=_("Revoke selected keys (cannot be undone)"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = 0
        for key in queryset.filter(revoked=False):
            key.revoked = True
            key.save(update_fields=["revoked"])  # save(), not update(): evicts the cached policy.
            self.log_change(request, key, gettext("Revoked (admin action)."))
            count += 1
        self.message_user(request, _("Revoked %(count)d key(s).") % {"count": count}, messages.SUCCESS)

    @admin.action(
        description=_("Rotate selected keys (the old ones keep working for the grace period)"),
        permissions=["rotate"],
    )
    @sensitive_variables()
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> TemplateResponse | None:
        grace = timedelta(seconds=conf.ROTATION_GRACE)
        new_keys = []
        for key in queryset.select_related("account"):
            try:
                new_key, raw_key = key.rotate(grace)
            except ValidationError as exc:
                self.message_user(request, f"{key.prefix}: {' '.join(exc.messages)}", messages.ERROR)
                continue
            until = key.expires_at.isoformat() if key.expires_at else ""
            self.log_change(
                request,
                key,
                gettext(
                    "Rotated (admin action): replaced by %(new)s; this key keeps working until %(until)s "
                    "(grace %(grace)d s)."
                )
                % {"new": new_key.prefix, "until": until, "grace": conf.ROTATION_GRACE},
            )
            self.log_addition(request, new_key, gettext("Issued by rotating %(old)s.") % {"old": key.prefix})
            new_keys.append(NewKey(new_key, raw_key, replaces=key))
        if not new_keys:
            return None  # Only refusals: back to the list, with their messages.
        return self.new_keys_response(request, new_keys)

    @admin.action(description=_("Reset the rate-limit counters of selected keys"), permissions=["change"])
    def reset_counters(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        storage = get_storage()
        keys = list(queryset)
        try:
            for key in keys:
                storage.clear(key.prefix, key.account_id, categories.in_use(key.account.effective_rules()))
        except StorageUnavailable as exc:
            self.message_user(
                request, _("The rate-limit store is unavailable: %(error)s") % {"error": exc}, messages.ERROR
            )
            return
        counters_reset.send(sender=APIKey, prefixes=[key.prefix for key in keys])
        for key in keys:
            self.log_change(request, key, gettext("Rate-limit counters reset (admin action)."))
        self.message_user(request, _("Counters reset."), messages.SUCCESS)
