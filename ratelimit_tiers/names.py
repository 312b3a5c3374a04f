"""Names the Python code shares with the store and its Lua: key states and the store's key names.

The lowest module of the app: it imports nothing else from it, so any module
may use it. ``tests/test_names.py`` checks that the literals of
``storage/scripts/*.lua`` are the names defined here.
"""

from __future__ import annotations

from enum import Enum


class KeyState(str, Enum):
    """Whether a key may be used: its policy's ``state`` in the store, and what ``hit.lua`` answers.

    A ``str`` (``KeyState.ACTIVE == "active"``), so it is written to the store
    and compared with the store's replies as is. (``enum.StrEnum`` is Python
    3.11+; this is its 3.10 equivalent.)
    """

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    INACTIVE = "inactive"  # Its account is disabled.
    UNKNOWN = "unknown"  # No such key.

    def __str__(self) -> str:
        return self.value


ACTIVE = KeyState.ACTIVE
REVOKED = KeyState.REVOKED
EXPIRED = KeyState.EXPIRED
INACTIVE = KeyState.INACTIVE
UNKNOWN = KeyState.UNKNOWN


class KeyStatus(str, Enum):
    """A key's status as the admin shows it, from its row alone (``APIKey.status``).

    Not a :class:`KeyState`: a rotated key in its grace period is still an
    active key to the limiter, and the admin's status does not look at the
    account (``INACTIVE``) nor at keys that do not exist (``UNKNOWN``). The
    values both have mean the same.
    """

    ACTIVE = KeyState.ACTIVE.value
    ROTATING = "rotating"  # Replaced by a new key, in its grace period.
    EXPIRED = KeyState.EXPIRED.value
    REVOKED = KeyState.REVOKED.value

    def __str__(self) -> str:
        return self.value


#: The replies of ``hit.lua`` that are not a key state nor a decision:
#: ``"miss <generation>"``, no policy is installed for the key;
#: ``"cost <count> <rule>"``, the request costs more than a rule's count.
MISS = "miss"
COST = "cost"

#: How store keys and the encoded rules (``policies.encode``) name the kinds of
#: counter: the exact ring, the sliding-window counter, the calendar quota.
EXACT_KIND = "e"
COUNTER_KIND = "c"
QUOTA_KIND = "q"
#: How the encoded rules name the scopes: per API key, or per account.
KEY_SCOPE = "k"
ACCOUNT_SCOPE = "a"


# Store keys. The braces are a Redis Cluster hash tag: every key of an
# account (its keys' policies and counters, and its shared pools) shares the
# account's slot, so one script can touch all the counters a check needs.

#: The owner part of an account's shared counters (``scope="account"``): never a key prefix.
POOL = "*"


def account_tag(account_id: int) -> str:
    """The hash tag of an account's keys in the store."""
    return f"a{account_id}"


def policy_key(tag: str, prefix: str) -> str:
    """The hash of the key's resolved policy (``policies.Policy.to_fields``)."""
    return f"rlt:{{{tag}}}:{prefix}:policy"


def generation_key(tag: str, prefix: str) -> str:
    """The token each eviction of the key's policy replaces (``Storage.forget``)."""
    return f"rlt:{{{tag}}}:{prefix}:gen"


def counter_base(tag: str, owner: str, category: str) -> str:
    """Where the counters of a category live: a key's (``owner``: its prefix), or a pool's (:data:`POOL`)."""
    return f"rlt:{{{tag}}}:{owner}:{category}"


def counter_key(base: str, rule: str, kind: str, start: int | None = None) -> str:
    """One rule's counter under ``base``, in the layout of one ``kind`` of counter.

    ``kind`` is ``e`` (exact ring), ``c`` (sliding-window counter) or ``q``
    (calendar quota, whose counter is the period's: ``start`` in ms). The
    script builds the same names (``storage/scripts/hit.lua``).
    """
    key = f"{base}:{rule}:{kind}"
    return key if start is None else f"{key}:{start}"


def used_key(prefix: str) -> str:
    """The marker that the key's ``last_used`` was written this minute, by some process."""
    return f"rlt:{{{prefix}}}:used"


def client_bucket(network: str) -> str:
    """The name of a client network's bucket for requests with unusable keys (``Storage.hit_rate``).

    Its ``ip:`` start keeps it apart from every key prefix.
    """
    return f"ip:{network}"


def status_bucket(prefix: str) -> str:
    """The name of a key's bucket for its requests to the status view (``Storage.hit_rate``).

    Its ``status:`` start keeps it apart from every key prefix, and from the key's own counters.
    """
    return f"status:{prefix}"


# The usage ledger (``storage/scripts/ledger.lua``, read by ``usage``): one
# hash per account and UTC hour, ``<ledger_key(tag)>:<hour>`` (hour: Unix
# seconds // 3600), in the account's slot like its counters. Its fields are
# per key prefix and category, ``<prefix>:<category>:<what>``, where what is:

#: The requests admitted (every one the client got through, shadow-mode ones included).
LEDGER_ADMITTED = "a"
#: ``r:<rule>``: the requests refused, by the name of the rule that refused each.
LEDGER_REFUSED = "r"
#: The last refusal, in Unix ms on the store's clock.
LEDGER_LAST_REFUSED = "t"
#: The refusing "rule" of a request another throttle of the view refused after ours admitted it
#: (``Storage.give_back``): no rule name has a tilde.
OTHER_THROTTLE = "~other-throttle"


def ledger_key(tag: str) -> str:
    """The start of the name of each of an account's ledger hashes: ``:<hour>`` follows."""
    return f"rlt:{{{tag}}}:u"


def ledger_field(prefix: str, category: str) -> str:
    """The start of the names of a key's and category's fields in a ledger hash: ``<what>`` follows."""
    return f"{prefix}:{category}:"
