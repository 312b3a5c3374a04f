"""What the admin shows of a key: its status badge and its live usage of each rule, read from the store."""

from __future__ import annotations

import math
import time
from typing import Any

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers import categories
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import KeyStatus
from ratelimit_tiers.storage import Unusable, get_storage

#: By a key's status; also names the store's key states they share (``live_usage``).
STATUS_LABELS: dict[str, Any] = {
    KeyStatus.ACTIVE: _("active"),
    KeyStatus.ROTATING: _("rotating"),
    KeyStatus.EXPIRED: _("expired"),
    KeyStatus.REVOKED: _("revoked"),
}
STATUS_COLORS = {
    KeyStatus.ACTIVE: "#2e7d32",
    KeyStatus.ROTATING: "#b26a00",
    KeyStatus.EXPIRED: "#777",
    KeyStatus.REVOKED: "#c62828",
}
#: The key querysets that show usage prefetch these, so that it reads the rules without SQL.
RULES_PREFETCH = ("account__rules", "account__tier__rules")


def live_usage(key: APIKey) -> SafeString:
    """The key's usage of each rule it meets, per category in use, read from the limiter store.

    Looking counts nothing. No SQL when ``key`` comes with :data:`RULES_PREFETCH`.
    """
    storage = get_storage()
    rows = []
    try:
        for category in categories.in_use(key.account.effective_rules()):
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
        '<div class="rlt-usage">{} · {}: {} / {} used, {} left, resets in {} s</div>',
        rows,
    )


def status_badge(key: APIKey) -> SafeString:
    status = key.status
    return format_html(
        '<span class="rlt-status rlt-status-{}" style="color: {}; font-weight: bold">{}</span>',
        status,
        STATUS_COLORS[status],
        STATUS_LABELS[status],
    )


class KeyColumns:
    """Read-only key columns shared by the inline on accounts and the key list."""

    @admin.display(description=_("status"))
    def status(self, obj: APIKey) -> SafeString:
        return status_badge(obj)

    @admin.display(description=_("usage in the current window"))
    def usage(self, obj: APIKey) -> SafeString:
        return live_usage(obj)
