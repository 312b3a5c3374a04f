"""What a key is allowed to do, resolved from the database once and kept in the store.

A :class:`Policy` flattens key -> account -> tier into the few numbers the
limiter needs. It lives next to the key's counters, so a check reads it in the
same round trip as it counts; saving a tier, an account or a key evicts the
policies it affects, so every worker sees the change on its next request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from ratelimit_tiers.algorithms import Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import Account, APIKey, Tier, keys_changed

logger = logging.getLogger("ratelimit_tiers")

ACTIVE = "active"
REVOKED = "revoked"
EXPIRED = "expired"
INACTIVE = "inactive"
UNKNOWN = "unknown"


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


def state_of(*, revoked: bool, account_active: bool) -> str:
    """A key's state from its row, before its expiry (which the checks compare with their clock)."""
    if revoked:
        return REVOKED
    if not account_active:
        return INACTIVE
    return ACTIVE


def evict(prefixes: Iterable[str]) -> None:
    """Drop cached policies now and again once the transaction commits.

    A request racing the save may reload the old row before the commit and
    cache it again; the second eviction removes that stale copy. Each eviction
    also gives the keys a new generation, so a load that read the row before
    it can never install its policy after it (see ``Storage.forget``).
    """
    prefixes = list(prefixes)
    if prefixes:
        _forget(prefixes)
        transaction.on_commit(lambda: _forget(prefixes))


def _forget(prefixes: list[str]) -> None:
    from ratelimit_tiers.storage import get_storage

    try:
        get_storage().forget(prefixes)
    except StorageUnavailable as exc:
        # The save itself must not fail; stale policies expire after POLICY_TIMEOUT.
        logger.warning("Could not evict %d rate-limit policies: %s", len(prefixes), exc)


@receiver([post_save, post_delete], sender=Tier, dispatch_uid="rlt_evict_tier")
def _tier_changed(instance: Tier, **kwargs: Any) -> None:
    evict(APIKey.objects.filter(account__tier_id=instance.pk).values_list("prefix", flat=True))


@receiver([post_save, post_delete], sender=Account, dispatch_uid="rlt_evict_account")
def _account_changed(instance: Account, **kwargs: Any) -> None:
    evict(APIKey.objects.filter(account_id=instance.pk).values_list("prefix", flat=True))


@receiver([post_save, post_delete], sender=APIKey, dispatch_uid="rlt_evict_key")
def _key_changed(instance: APIKey, **kwargs: Any) -> None:
    evict([instance.prefix])


@receiver(keys_changed, dispatch_uid="rlt_evict_keys")
def _keys_changed(prefixes: list[str], **kwargs: Any) -> None:
    evict(prefixes)
