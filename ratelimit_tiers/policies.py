"""What a key is allowed to do, resolved from the database once and kept in the store.

A :class:`Policy` flattens key -> account -> tier into the few numbers the
limiter needs. It lives next to the key's counters, so a check reads it in the
same round trip as it counts; saving a tier, an account or a key evicts the
policies it affects (:mod:`~ratelimit_tiers.invalidation`), so every worker
sees the change on its next request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ratelimit_tiers.algorithms import Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import ACTIVE, INACTIVE, REVOKED, UNKNOWN, KeyState


@dataclass(frozen=True)
class Policy:
    state: str
    window: int = 60
    algorithm: str = ""
    limits: Mapping[str, int] = field(default_factory=dict)
    expires_at: float = 0.0
    tier: str = ""
    shadow: bool = False

    def rate(self, category: str) -> Rate:
        return Rate(self.limits.get(category, 0), self.window)

    def to_fields(self) -> dict[str, str | int | float]:
        """Flat mapping stored as a Redis hash (see ``storage/scripts/policy.lua``)."""
        return {
            "state": self.state,
            "window": self.window,
            "algorithm": self.algorithm or conf.ALGORITHM,
            "expires": int(self.expires_at * 1000),
            "tier": self.tier,
            "shadow": int(self.shadow),
            **dict(self.limits),
        }


def load_policy(prefix: str) -> Policy:
    """Resolve a key's policy with one query; unknown prefixes get an ``UNKNOWN`` policy."""
    key = APIKey.objects.select_related("account__tier").filter(prefix=prefix).first()
    if key is None:
        return Policy(UNKNOWN)
    account, tier = key.account, key.account.tier
    return Policy(
        state=state_of(revoked=key.revoked, account_active=account.is_active),
        window=tier.window_seconds,
        algorithm=tier.algorithm,
        limits=account.limits(),
        expires_at=key.expiry_timestamp() or 0.0,
        tier=tier.name,
        shadow=tier.shadow,
    )


def state_of(*, revoked: bool, account_active: bool) -> KeyState:
    """A key's state from its row, before its expiry (which the checks compare with their clock)."""
    if revoked:
        return REVOKED
    if not account_active:
        return INACTIVE
    return ACTIVE
