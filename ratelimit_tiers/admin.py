"""The Django admin for tiers, accounts and keys: live usage, issuing, rotating and revoking keys."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers import categories
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
from ratelimit_tiers.names import KeyStatus
from ratelimit_tiers.rules import Rule
from ratelimit_tiers.storage import Unusable, get_storage

#: By a key's status; also names the store's key states they share (``live_usage``).
STATUS_LABELS: dict[str, Any] = {
    KeyStatus.ACTIVE: _("active"),
    KeyStatus.ROTATING: _("rotating"),
    KeyStatus.EXPIRED: _("expired"),
    KeyStatus.REVOKED: _("revoked"),
}
#: Attribute of the ``HttpRequest`` that carries a key added in the admin to its response.
NEW_KEYS_ATTRIBUTE = "ratelimit_tiers_new_keys"


@dataclass(frozen=True)
class NewKey:
    """A key just issued, with its secret, for the one page that shows it."""

    key: APIKey
    raw_key: str = field(repr=False)
    replaces: APIKey | None = None


STATUS_COLORS = {
    KeyStatus.ACTIVE: "#2e7d32",
    KeyStatus.ROTATING: "#b26a00",
    KeyStatus.EXPIRED: "#777",
    KeyStatus.REVOKED: "#c62828",
}


def live_usage(key: APIKey) -> SafeString:
    """The key's usage of each rule it meets, per category views can count in, from the limiter store.

    Reads no database (a list of keys shows one per row): the key's rules are
    those of its policy in the store, in the built-in and declared categories.
    """
    storage = get_storage()
    rows = []
    try:
        for category in categories.in_use():
            outcome = storage.peek(key.prefix, key.account_id, category)
            if isinstance(outcome, Unusable):
                return format_html("<em>{}</em>", STATUS_LABELS.get(outcome.state, outcome.state))
            for decision in outcome.decisions:
                rows.append(
                    (
                        category,
                        decision.policy,
                        decision.limit - decision.remaining,
                        decision.limit,
                        decision.remaining,
                        max(0, math.ceil(decision.reset_at - time.time())),
                    )
                )
    except StorageUnavailable:
        return format_html("<em>{}</em>", gettext("rate-limit store unavailable"))
    return format_html_join(
        "",
        '<div class="rlt-usage">{} ({}): {} / {} used, {} left, resets in {} s</div>',
        rows,
    )


def _until(until: float | None) -> str:
    if until is None:
        return ""
    moment = datetime.fromtimestamp(until, tz=timezone.get_current_timezone())
    return gettext("until %(time)s") % {"time": moment.isoformat(timespec="seconds")}


class LimitRuleInline(admin.TabularInline):
    model = LimitRule
    fields = ["category", "count", "window_seconds", "calendar", "scope", "algorithm"]
    extra = 0


class OverrideInline(LimitRuleInline):
    fields = [*LimitRuleInline.fields, "until"]
    verbose_name = _("override")
    verbose_name_plural = _("overrides (replace the tier's rule of the same category, period and scope)")


def describe_rules(rules: Iterable[Rule], *, origin: bool = False) -> SafeString:
    rows = [
        (
            rule.rate,
            rule.category or gettext("every category"),
            rule.scope,
            (rule.origin if origin else ""),
            _until(rule.until),
        )
        for rule in rules
    ]
    return format_html_join("", '<div class="rlt-rule">{} · {} · per {} {} {}</div>', rows)


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ["name", "limits", "shadow", "account_count"]
    list_filter = ["shadow"]
    search_fields = ["name"]
    fields = ["name", "description", "shadow"]
    inlines = [LimitRuleInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tier]:
        queryset: QuerySet[Tier] = super().get_queryset(request)
        return queryset.annotate(_account_count=Count("accounts")).prefetch_related("rules")

    @admin.display(description=_("accounts"), ordering="_account_count")
    def account_count(self, obj: Any) -> int:
        return int(obj._account_count)

    @admin.display(description=_("limit rules"))
    def limits(self, obj: Tier) -> SafeString:
        return describe_rules(rule.as_rule() for rule in obj.rules.all())


class KeyColumns:
    """Read-only key columns shared by the inline on accounts and the key list."""

    @admin.display(description=_("status"))
    def status(self, obj: APIKey) -> SafeString:
        return status_badge(obj)

    @admin.display(description=_("usage in the current window"))
    def usage(self, obj: APIKey) -> SafeString:
        return live_usage(obj)


class APIKeyInline(KeyColumns, admin.TabularInline):
    model = APIKey
    fields = ["name", "prefix", "status", "usage", "last_used", "expires_at"]
    readonly_fields = ["name", "prefix", "status", "usage", "last_used", "expires_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # Keys are issued from the API key page, which shows the secret once.


def status_badge(key: APIKey) -> SafeString:
    status = key.status
    return format_html(
        '<span class="rlt-status rlt-status-{}" style="color: {}; font-weight: bold">{}</span>',
        status,
        STATUS_COLORS[status],
        STATUS_LABELS[status],
    )


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


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "tier", "is_active", "key_count", "created"]
    list_filter = ["tier", "is_active", "tier__shadow"]
    search_fields = ["name", "api_keys__prefix", "api_keys__name"]
    readonly_fields = ["effective_rules"]
    inlines = [OverrideInline, APIKeyInline]

    @admin.display(description=_("effective rules"))
    def effective_rules(self, obj: Account) -> SafeString:
        if obj.pk is None:
            return SafeString()  # format_html("") is deprecated (Django 5.0): it fails the add page.
        return describe_rules(obj.effective_rules(), origin=True)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        queryset: QuerySet[Account] = super().get_queryset(request)
        return queryset.select_related("tier").annotate(_key_count=Count("api_keys"))

    @admin.display(description=_("keys"), ordering="_key_count")
    def key_count(self, obj: Any) -> int:
        return int(obj._key_count)


@admin.register(APIKey)
class APIKeyAdmin(KeyColumns, admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "account",
        "status",
        "created",
        "last_used",
        "expires_at",
        "has_expired",
    ]
    list_filter = [StatusFilter, "revoked", "account__tier"]
    search_fields = ["name", "prefix", "account__name"]
    list_select_related = ["account"]
    readonly_fields = ["prefix", "status", "created", "last_used", "rotated_to", "usage"]
    actions = ["revoke_keys", "rotate_keys", "reset_counters"]

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
        for key in keys:
            self.log_change(request, key, gettext("Rate-limit counters reset (admin action)."))
        self.message_user(request, _("Counters reset."), messages.SUCCESS)
