"""The Lua scripts speak the vocabulary of ``ratelimit_tiers.names``: no literal the Python does not know."""

from __future__ import annotations

import re
from pathlib import Path

from ratelimit_tiers import names
from ratelimit_tiers.algorithms import ALGORITHMS, CATEGORIES
from ratelimit_tiers.names import KeyState, KeyStatus
from ratelimit_tiers.policies import Policy
from ratelimit_tiers.rules import CALENDARS

SCRIPTS = sorted((Path(names.__file__).parent / "storage" / "scripts").rglob("*.lua"))
# A string literal, or a comment (skipped: prose may quote anything).
TOKEN = re.compile(r'"((?:\\.|[^"\\\n])*)"|\'((?:\\.|[^\'\\\n])*)\'|--\[\[.*?\]\]|--[^\n]*', re.DOTALL)
REPLY = re.compile(r'\breturn\s+"(\w*)')

#: Field names of the counter layout's hash (KEYS[3] of hit.lua): window index, current, previous.
COUNTER_FIELDS = {"w", "c", "p"}


def literals(source: str) -> set[str]:
    found = set()
    for match in TOKEN.finditer(source):
        if match.group(1) is not None or match.group(2) is not None:
            found.add(match.group(1) if match.group(1) is not None else match.group(2))
    return found


#: What the encoded rules and the counters' key names are made of (see policies.encode, names.counter_key).
RULE_WORDS = {
    names.EXACT_KIND,
    names.COUNTER_KIND,
    names.QUOTA_KIND,
    names.KEY_SCOPE,
    names.ACCOUNT_SCOPE,
}


#: What the usage ledger's fields are made of (names.ledger_field and what follows), and Lua's pattern
#: that splits the ledger's argument into words.
LEDGER_WORDS = {
    names.LEDGER_ADMITTED,
    names.LEDGER_REFUSED + ":",
    names.LEDGER_LAST_REFUSED,
    names.OTHER_THROTTLE,
    "^(%d+) (%d) (%S+)(.*)$",  # The ledger's argument (storage.redis), and the refusals it carries.
    "(%S+) (%d+) (%d+)",
}


def known(literal: str) -> bool:
    word = literal.strip()
    return (
        word in {s.value for s in KeyState}
        or word in (names.MISS, names.COST)
        or word in Policy(KeyState.ACTIVE).to_fields()
        or word.rstrip(":") in RULE_WORDS
        or word in (":", "r:", "\\n")  # A key's separator, the rules' field, the reply's lines.
        or word == "(%a) (%d+) (%a) (%d+) ([^;]+)"  # One encoded rule (policies.encode).
        or word in CATEGORIES
        or word in ALGORITHMS
        or word in COUNTER_FIELDS
        or word in LEDGER_WORDS
        or re.fullmatch(r"[A-Z]+", word) is not None  # A Redis command or option.
        or re.fullmatch(r"u48|#\d*", word) is not None  # BITFIELD's type and offsets.
        or re.fullmatch(r">(I6)+", word) is not None  # The same u48 slots, packed (Lua's struct).
        or re.fullmatch(r"-1|[01]?|\\0|(%[ds] ?)+", word) is not None  # String end, flags, padding, formats.
    )


def test_the_scripts_exist():
    assert {path.name for path in SCRIPTS} >= {"hit.lua", "give_back.lua"}


def test_every_literal_of_the_scripts_is_a_known_name():
    for path in SCRIPTS:
        unknown = sorted(word for word in literals(path.read_text()) if not known(word))
        assert unknown == [], f"{path.name}: literals that are no name of ratelimit_tiers.names"


def test_the_scripts_reply_with_key_states():
    replies = {word for path in SCRIPTS for word in REPLY.findall(path.read_text()) if word}
    assert replies  # "active" is never a reply; "expired" and the miss are.
    assert replies <= {s.value for s in KeyState} | {names.MISS, names.COST}


def test_key_states_are_strings_the_store_can_hold():
    assert KeyState.REVOKED == "revoked"
    assert str(KeyState.EXPIRED) == f"{KeyState.EXPIRED}" == "expired"
    assert KeyState("inactive") is KeyState.INACTIVE


def test_a_status_shared_with_the_key_states_means_the_same():
    shared = {s.name for s in KeyStatus} & {s.name for s in KeyState}
    assert shared == {"ACTIVE", "EXPIRED", "REVOKED"}
    assert all(KeyStatus[name].value == KeyState[name].value for name in shared)


def test_store_key_names():
    tag = names.account_tag(7)
    assert tag == "a7"
    assert names.policy_key(tag, "abc") == "rlt:{a7}:abc:policy"
    assert names.generation_key(tag, "abc") == "rlt:{a7}:abc:gen"
    base = names.counter_base(tag, "abc", "read")
    assert base == "rlt:{a7}:abc:read"
    assert names.counter_base(tag, names.POOL, "read") == "rlt:{a7}:*:read"
    assert names.counter_key(base, "all-60s", names.EXACT_KIND) == "rlt:{a7}:abc:read:all-60s:e"
    assert names.counter_key(base, "all-day", names.QUOTA_KIND, 1000) == "rlt:{a7}:abc:read:all-day:q:1000"
    assert names.used_key("abc") == "rlt:{abc}:used"
    assert names.client_bucket("10.0.0.1") == "ip:10.0.0.1"
    assert names.ledger_key(tag) == "rlt:{a7}:u"  # ":<hour>" follows: the account's slot, no key's prefix.
    assert names.ledger_field("abc", "read") == "abc:read:"


def test_the_calendars_are_the_scripts_quota_kinds():
    # policies.encode names a quota by its calendar's first letter; hit.lua and give_back.lua
    # find each one's period in their CALENDAR table.
    letters = {calendar[:1] for calendar in CALENDARS}
    assert len(letters) == len(CALENDARS)
    for path in SCRIPTS:
        if path.name in ("hit.lua", "give_back.lua"):
            table = re.search(r"local CALENDAR = \{([^}]*)\}", path.read_text())
            assert table is not None, path.name
            assert set(re.findall(r"(\w+) =", table.group(1))) == letters
