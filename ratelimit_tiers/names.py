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


#: The one reply of ``hit.lua`` that is not a key state nor a decision:
#: ``"miss <generation>"``, no policy is installed for the key.
MISS = "miss"


# Store keys. The braces are a Redis Cluster hash tag: one key's policy and
# counters share a slot, so one script can touch them all.


def policy_key(prefix: str) -> str:
    """The hash of the key's resolved policy (``policies.Policy.to_fields``)."""
    return f"rlt:{{{prefix}}}:policy"


def generation_key(prefix: str) -> str:
    """The token each eviction of the key's policy replaces (``Storage.forget``)."""
    return f"rlt:{{{prefix}}}:gen"


def bucket_key(prefix: str, category: str, algorithm: str) -> str:
    """The key's counter of one endpoint category, in the layout of one algorithm."""
    return f"rlt:{{{prefix}}}:{category}:{algorithm}"


def used_key(prefix: str) -> str:
    """The marker that the key's ``last_used`` was written this minute, by some process."""
    return f"rlt:{{{prefix}}}:used"


def client_bucket(network: str) -> str:
    """The name of a client network's bucket for requests with unusable keys (``Storage.hit_rate``).

    Its ``ip:`` start keeps it apart from every key prefix.
    """
    return f"ip:{network}"
