from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from django.core.cache import caches
from redis.exceptions import NoScriptError

from ratelimit_tiers.algorithms import COUNTER, EXACT, READ, Decision, Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.policies import ACTIVE, Policy, load_policy
from ratelimit_tiers.storage.base import Outcome, Storage, bucket_key, policy_key, wrap_errors

SCRIPT = (Path(__file__).parent / "scripts" / "hit.lua").read_bytes()
SCRIPT_SHA = hashlib.sha1(SCRIPT).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1.


class RedisStorage(Storage):
    """Exact sliding log or sliding-window counter in one Lua script per check.

    The script reads the key's policy and applies it in the same round trip,
    using the Redis server's clock (``TIME``), so app servers with skewed
    clocks agree. Works with any redis-py client that django-redis hands out
    (plain, Sentinel); :meth:`client` is the one place to change for others.
    """

    def client(self) -> Any:
        return self._client

    def make_key(self, key: str) -> str:
        return self._make_key(key)

    # Resolved once per storage instance, which get_storage() replaces when
    # CACHES or our settings change: a check then costs no lookups but its own.
    @cached_property
    def _client(self) -> Any:
        from django_redis import get_redis_connection

        return get_redis_connection(self.alias)

    @cached_property
    def _make_key(self) -> Callable[[str], str]:
        return caches[self.alias].make_key

    def hit(self, prefix: str, category: str) -> Outcome:
        return self._check(prefix, category, charge=True)

    def peek(self, prefix: str, category: str) -> Outcome:
        return self._check(prefix, category, charge=False)

    def clear(self, prefix: str) -> None:
        with wrap_errors():
            self.client().delete(*[self.make_key(k) for k in self.bucket_keys(prefix)])

    def forget(self, prefixes: Iterable[str]) -> None:
        keys = [self.make_key(policy_key(p)) for p in prefixes]
        with wrap_errors():
            client = self.client()
            # One DEL per key: keys of different prefixes may live on different cluster nodes.
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            pipe.execute()

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        # The bucket carries its own policy, installed by the same script call.
        keys = [
            self.make_key(policy_key(name)),
            self.make_key(bucket_key(name, READ, EXACT)),
            self.make_key(bucket_key(name, READ, COUNTER)),
        ]
        fields = Policy(ACTIVE, window=rate.window, limits={READ: rate.limit}).to_fields()
        reply = self._run(keys, [READ, "1", rate.window, *[x for item in fields.items() for x in item]])
        decision = self._outcome(reply).decision
        assert decision is not None
        return decision

    def _check(self, prefix: str, category: str, *, charge: bool) -> Outcome:
        keys = [
            self.make_key(policy_key(prefix)),
            self.make_key(bucket_key(prefix, category, EXACT)),
            self.make_key(bucket_key(prefix, category, COUNTER)),
        ]
        args: list[Any] = [category, "1" if charge else "0", conf.POLICY_TIMEOUT]
        reply = self._run(keys, args)
        if reply == b"miss":
            fields = load_policy(prefix).to_fields()
            reply = self._run(keys, args + [x for item in fields.items() for x in item])
        return self._outcome(reply)

    def _run(self, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        with wrap_errors():
            client = self.client()
            try:
                return client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)  # type: ignore[no-any-return]
            except NoScriptError:
                client.script_load(SCRIPT)
                return client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)  # type: ignore[no-any-return]

    @staticmethod
    def _outcome(reply: bytes) -> Outcome:
        if not reply[:1].isdigit():
            return Outcome(reply.decode())
        allowed, limit, window, remaining, reset, now = map(int, reply.split())
        return Outcome(
            ACTIVE,
            Decision(
                allowed=bool(allowed),
                limit=limit,
                window=window // 1000,
                remaining=remaining,
                reset_after=reset / 1000,
                now=now / 1000,
            ),
        )
