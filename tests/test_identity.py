from __future__ import annotations

from ratelimit_tiers.identity import IDENTITY_TTL, AccountUser, KeyIdentity, _IdentityCache


def identity(prefix="abcdefghijkl", account_id=1, name="acme"):
    return KeyIdentity(1, prefix, "hash", account_id, name)


def test_a_hit_returns_the_identity_and_its_user_built_once():
    cache = _IdentityCache(clock=lambda: 0.0)
    cache.put(identity())
    first, second = cache.get("abcdefghijkl"), cache.get("abcdefghijkl")
    assert first is second
    assert first.user == AccountUser(1, "acme")
    assert first.user is second.user  # request.user: not rebuilt per request.


def test_a_forget_racing_with_a_hit_loses_nothing():
    # get() takes no lock: another thread's forget() can land between its read and
    # its LRU touch. The clock is read right between the two: forget there.
    def clock():
        cache.forget("abcdefghijkl")
        return 0.0

    cache = _IdentityCache(clock=lambda: 0.0)
    cache.put(identity())
    cache.clock = clock
    assert cache.get("abcdefghijkl") == identity()  # Read just before the forget: as if a lock ordered them.
    assert cache.get("abcdefghijkl") is None


def test_an_expired_entry_replaced_meanwhile_is_kept():
    # An expired entry is dropped under the lock, unless a put() replaced it meanwhile.
    now = [0.0]
    fresh = identity(name="acme corp")

    def clock():
        if now[0] > IDENTITY_TTL:
            cache.clock = lambda: now[0]
            cache.put(fresh)  # Another thread, between the expired read and the drop.
        return now[0]

    cache = _IdentityCache(clock=clock)
    cache.put(identity())
    now[0] = IDENTITY_TTL + 1
    assert cache.get("abcdefghijkl") is None  # Expired when read...
    assert cache.get("abcdefghijkl") is fresh  # ...and its replacement stays.
