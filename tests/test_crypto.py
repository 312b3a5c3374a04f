from __future__ import annotations

from ratelimit_tiers import crypto


def test_generated_key_round_trips_and_only_hash_is_kept():
    raw_key, prefix, hashed = crypto.generate_key()
    parts = crypto.split_key(raw_key)
    assert parts is not None
    assert parts[0] == prefix
    assert raw_key.split(".")[1] not in hashed
    assert crypto.verify_secret(parts[1], hashed)
    assert not crypto.verify_secret(parts[1][:-1] + ("A" if parts[1][-1] != "A" else "B"), hashed)


def test_keys_are_unique():
    assert len({crypto.generate_key()[0] for _ in range(200)}) == 200


def test_split_key_rejects_malformed():
    raw_key = crypto.generate_key()[0]
    for bad in ["", "abc", raw_key + "x", raw_key.replace(".", ":"), "é" * 56, raw_key[:-1] + "%"]:
        assert crypto.split_key(bad) is None
