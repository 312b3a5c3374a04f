from __future__ import annotations

from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.cache import CacheStorage
from ratelimit_tiers.storage.dummy import DummyStorage


def test_the_storage_is_kept_until_the_settings_change(settings):
    first = get_storage()
    assert isinstance(first, CacheStorage)
    assert get_storage() is first  # One per configuration, not one per check.
    settings.RATELIMIT_TIERS_STORAGE = "ratelimit_tiers.storage.dummy.DummyStorage"
    assert isinstance(get_storage(), DummyStorage)
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    settings.CACHES = {**settings.CACHES, "other": locmem}
    del settings.RATELIMIT_TIERS_STORAGE
    settings.RATELIMIT_TIERS_CACHE = "other"
    assert isinstance(get_storage(), CacheStorage)
    assert get_storage().alias == "other"
