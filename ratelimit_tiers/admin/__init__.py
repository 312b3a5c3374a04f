"""The Django admin for tiers, accounts, their limit rules and API keys: importing it registers them.

One module per concern: ``rules`` (the rule inlines and tables), ``tiers``,
``accounts``, ``keys`` (issuing, rotating, revoking) and ``usage`` (a key's
status and live usage). From the usage ledger: ``charts`` (SVG bar charts),
``account_charts`` (an account's hourly and daily usage), ``usage_columns``
(today's counts in the lists, the "throttled" filter), ``peak_share``,
``throttled`` (the "Throttled most" page), ``daily_usage`` (the rolled-up rows)
and ``export`` (the CSV for billing).
"""

from __future__ import annotations

from ratelimit_tiers.admin.accounts import AccountAdmin, APIKeyInline
from ratelimit_tiers.admin.daily_usage import DailyUsageAdmin
from ratelimit_tiers.admin.keys import NEW_KEYS_ATTRIBUTE, APIKeyAdmin, NewKey, StatusFilter
from ratelimit_tiers.admin.rules import (
    LimitRuleForm,
    LimitRuleInline,
    OverrideInline,
    compact_rates,
    rules_table,
)
from ratelimit_tiers.admin.tiers import TierAdmin
from ratelimit_tiers.admin.usage import STATUS_COLORS, STATUS_LABELS, KeyColumns, live_usage, status_badge

__all__ = [
    "NEW_KEYS_ATTRIBUTE",
    "STATUS_COLORS",
    "STATUS_LABELS",
    "APIKeyAdmin",
    "APIKeyInline",
    "AccountAdmin",
    "DailyUsageAdmin",
    "KeyColumns",
    "LimitRuleForm",
    "LimitRuleInline",
    "NewKey",
    "OverrideInline",
    "StatusFilter",
    "TierAdmin",
    "compact_rates",
    "live_usage",
    "rules_table",
    "status_badge",
]
