"""What a change to a tier, an account or a key invalidates, and the receivers that drop it.

Everything kept about keys outside the database: the policies in the store
(in every process at once), and each process's memory of key identities, key
states and refusals (``local_refusals``). Connected by ``RatelimitTiersConfig.ready``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.identity import identities
from ratelimit_tiers.key_state import states
from ratelimit_tiers.local_refusals import notes, unknown_prefixes
from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier, keys_changed
from ratelimit_tiers.signals import counters_reset
from ratelimit_tiers.storage import get_storage

logger = logging.getLogger("ratelimit_tiers")


def evict(keys: Iterable[tuple[str, int]]) -> None:
    """Drop cached policies now and again once the transaction commits.

    A request racing the save may reload the old row before the commit and
    cache it again; the second eviction removes that stale copy. Each eviction
    also gives the keys a new generation, so a load that read the row before
    it can never install its policy after it (see ``Storage.forget``).
    """
    keys = list(keys)
    if keys:
        _forget(keys)
        transaction.on_commit(lambda: _forget(keys))


def _forget(keys: list[tuple[str, int]]) -> None:
    # This process's refusals of these keys: they may be admitted earlier now.
    notes.forget([prefix for prefix, _account in keys])
    try:
        get_storage().forget(keys)
    except StorageUnavailable as exc:
        # The save itself must not fail; stale policies expire after POLICY_TIMEOUT.
        logger.warning("Could not evict %d rate-limit policies: %s", len(keys), exc)


KEY_FIELDS = ("prefix", "account_id")


@receiver([post_save, post_delete], sender=Tier, dispatch_uid="rlt_evict_tier")
def _tier_changed(instance: Tier, **kwargs: Any) -> None:
    evict(APIKey.objects.filter(account__tier_id=instance.pk).values_list(*KEY_FIELDS))


@receiver([post_save, post_delete], sender=Account, dispatch_uid="rlt_evict_account")
def _account_changed(instance: Account, **kwargs: Any) -> None:
    evict(APIKey.objects.filter(account_id=instance.pk).values_list(*KEY_FIELDS))


@receiver([post_save, post_delete], sender=LimitRule, dispatch_uid="rlt_evict_rule")
def _rule_changed(instance: LimitRule, **kwargs: Any) -> None:
    owner = (
        Q(account__tier_id=instance.tier_id)
        if instance.tier_id is not None
        else Q(account_id=instance.account_id)
    )
    keys = APIKey.objects.filter(owner)
    evict(keys.values_list(*KEY_FIELDS))


@receiver([post_save, post_delete], sender=APIKey, dispatch_uid="rlt_evict_key")
def _key_changed(instance: APIKey, **kwargs: Any) -> None:
    evict([(instance.prefix, instance.account_id)])


@receiver(keys_changed, dispatch_uid="rlt_evict_keys")
def _keys_changed(keys: list[tuple[str, int]], **kwargs: Any) -> None:
    evict(keys)


@receiver([post_save, post_delete], sender=Account, dispatch_uid="rlt_identities_account")
def _account_identities(instance: Account, **kwargs: Any) -> None:
    identities.forget(account_id=instance.pk)  # Its name may have changed.


@receiver([post_save, post_delete], sender=APIKey, dispatch_uid="rlt_identities_key")
def _key_identity(instance: APIKey, **kwargs: Any) -> None:
    identities.forget(prefix=instance.prefix)  # Its account may have changed.


@receiver(post_save, sender=APIKey, dispatch_uid="rlt_unknown_prefixes_key")
def _key_created(instance: APIKey, created: bool, **kwargs: Any) -> None:
    # Never "unknown" in the process that created it: now, and once committed (a request
    # racing the creation may have read the database before the commit).
    if created:
        prefixes = [instance.prefix]
        unknown_prefixes.forget(prefixes)
        transaction.on_commit(lambda: unknown_prefixes.forget(prefixes))


@receiver(counters_reset, dispatch_uid="rlt_notes_reset")
def _counters_reset(prefixes: list[str], **kwargs: Any) -> None:
    notes.forget(prefixes)  # A full quota again: this process's refusals of these keys are void.


@receiver([post_save, post_delete], sender=APIKey, dispatch_uid="rlt_key_state_key")
@receiver([post_save, post_delete], sender=Account, dispatch_uid="rlt_key_state_account")
def _key_states(**kwargs: Any) -> None:
    states.clear()
