"""What a key is allowed to do, resolved from the database once and kept in the store.

A :class:`Policy` flattens key -> account -> tier into the key's state and its
effective limit rules. It lives next to the key's counters, so a check reads
it in the same round trip as it counts; saving a tier, an account, a rule or a
key evicts the policies it affects (:mod:`~ratelimit_tiers.invalidation`), so
every worker sees the change on its next request, and a policy whose account
override ends is never kept past that end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db.models import Q

from ratelimit_tiers import rules as rules_
from ratelimit_tiers.algorithms import COUNTER, EXACT, algorithm_for
from ratelimit_tiers.conf import conf
from ratelimit_tiers.models import APIKey, LimitRule
from ratelimit_tiers.names import (
    ACCOUNT_SCOPE,
    ACTIVE,
    COUNTER_KIND,
    EXACT_KIND,
    INACTIVE,
    KEY_SCOPE,
    QUOTA_KIND,
    REVOKED,
    UNKNOWN,
    KeyState,
)
from ratelimit_tiers.rules import ACCOUNT, Rule

#: The kind of each algorithm's counter.
KINDS = {EXACT: EXACT_KIND, COUNTER: COUNTER_KIND}
#: The field of the rules a category without rules of its own meets (its tier's all-categories rules).
DEFAULT_RULES = "r:"


@dataclass(frozen=True)
class Policy:
    state: str
    rules: tuple[Rule, ...] = ()
    expires_at: float = 0.0
    tier: str = ""
    shadow: bool = False
    #: Unix time when an override in ``rules`` ends: the policy must not be kept past it.
    ends_at: float | None = None

    def applicable(self, category: str) -> tuple[Rule, ...]:
        return rules_.applicable(self.rules, category)

    def timeout(self, now: float) -> float:
        """Seconds to keep this policy: ``POLICY_TIMEOUT``, or less, to end with an override."""
        timeout = float(conf.POLICY_TIMEOUT)
        if self.ends_at is not None:
            timeout = min(timeout, self.ends_at - now)
        return max(timeout, 0.001)

    def to_fields(self) -> dict[str, str | int]:
        """Flat mapping stored as a Redis hash (see ``storage/scripts/policy.lua``).

        ``r:<category>`` holds the rules of each category that has rules of
        its own, and ``r:`` those every other category meets, each encoded
        as the script reads them (:func:`encode`).
        """
        fields: dict[str, str | int] = {
            "state": self.state,
            "expires": int(self.expires_at * 1000),
            "tier": self.tier,
            "shadow": int(self.shadow),
            DEFAULT_RULES: encode(self.applicable(rules_.ALL)),
        }
        for category in sorted({rule.category for rule in self.rules if rule.category}):
            fields[f"r:{category}"] = encode(self.applicable(category))
        return fields


def kind(rule: Rule) -> str:
    """The counter a rule keeps: a quota's, or its algorithm's (the counter above ``EXACT_MAX_LIMIT``)."""
    if rule.calendar:
        return QUOTA_KIND
    return KINDS[algorithm_for(rule.algorithm or conf.ALGORITHM, rule.count)]


def encode(rules: tuple[Rule, ...]) -> str:
    """``kind window_ms scope count name`` per rule, ``;``-separated: what ``hit.lua`` parses.

    A quota's kind is its calendar's first letter (``d``, ``w``, ``m``),
    whose bounds each check passes, and its window 0.
    """
    return ";".join(
        f"{rule.calendar[:1] or kind(rule)} {rule.window * 1000} "
        f"{ACCOUNT_SCOPE if rule.scope == ACCOUNT else KEY_SCOPE} "
        f"{rule.count} {rule.name}"
        for rule in rules
    )


def load_policy(prefix: str) -> Policy:
    """Resolve a key's policy with two queries; unknown prefixes get an ``UNKNOWN`` policy."""
    key = APIKey.objects.select_related("account__tier").filter(prefix=prefix).first()
    if key is None:
        return Policy(UNKNOWN)
    account, tier = key.account, key.account.tier
    now = time.time()
    rows = LimitRule.objects.filter(Q(tier_id=tier.pk) | Q(account_id=account.pk))
    by_tier = [row.as_rule() for row in rows if row.tier_id is not None]
    by_account = [row.as_rule() for row in rows if row.account_id is not None]
    effective = rules_.effective(by_tier, by_account, now)
    ends = [rule.until for rule in effective if rule.until is not None]
    return Policy(
        state=state_of(revoked=key.revoked, account_active=account.is_active),
        rules=effective,
        expires_at=key.expiry_timestamp() or 0.0,
        tier=tier.name,
        shadow=tier.shadow,
        ends_at=min(ends) if ends else None,
    )


def state_of(*, revoked: bool, account_active: bool) -> KeyState:
    """A key's state from its row, before its expiry (which the checks compare with their clock)."""
    if revoked:
        return REVOKED
    if not account_active:
        return INACTIVE
    return ACTIVE
