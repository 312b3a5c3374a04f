"""Redis: each check is one script call (``scripts/``) on the server's clock, exact or counter."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from django.core.cache import caches
from redis.exceptions import NoScriptError

from ratelimit_tiers.algorithms import COUNTER, EXACT, READ, Decision, Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.names import ACTIVE, bucket_key, policy_key
from ratelimit_tiers.policies import Policy, load_policy
from ratelimit_tiers.storage import base
from ratelimit_tiers.storage.backends import redis_client
from ratelimit_tiers.storage.base import Outcome, Storage, Unusable, Verdict, wrap_errors
from ratelimit_tiers.storage.eviction import warn_if_evicting
from ratelimit_tiers.storage.transport import Arg, KeptConnections, ScriptCall

SCRIPTS = Path(__file__).parent / "scripts"


def assemble(*parts: str) -> bytes:
    """One script from parts in ``scripts/``, in order: each part defines what the later ones use."""
    return b"\n".join((SCRIPTS / f"{part}.lua").read_bytes() for part in parts)


#: The check: the policy, the two algorithms, and the entry that picks one.
SCRIPT = assemble("policy", "counter", "exact", "hit")
SCRIPT_SHA = hashlib.sha1(SCRIPT).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1.
GIVE_BACK_SCRIPT = assemble("counter", "exact", "give_back").decode()

#: Checks whose encoded script call each storage keeps: (API key, category, hit or peek).
CALL_CACHE_SIZE = 8192


def flatten(fields: dict[str, Arg]) -> tuple[Arg, ...]:
    return tuple(x for item in fields.items() for x in item)


class RedisStorage(Storage):
    """Exact sliding log or sliding-window counter in one Lua script per check.

    The script reads the key's policy and applies it in the same round trip,
    using the Redis server's clock (``TIME``), so app servers with skewed
    clocks agree. Works on the client of django-redis (plain, Sentinel) or of
    Django's built-in Redis cache (its write server), see
    :func:`~ratelimit_tiers.storage.backends.redis_client`; :meth:`client` is
    the one place to change for others.
    """

    def __init__(self, alias: str) -> None:
        super().__init__(alias)
        # A busy key sends the same bytes on every check: build them once.
        self._check_call = lru_cache(maxsize=CALL_CACHE_SIZE)(self._build_check_call)
        # Connections of our own, made with the client pool's settings, kept
        # between checks: lending one from the pool costs more than the script.
        # The first one opened in each process asks whether Redis may evict our keys.
        self.transport = KeptConnections(self.client, lambda client: warn_if_evicting(self.alias, client))

    def client(self) -> Any:
        return self._client

    def make_key(self, key: str) -> str:
        return self._make_key(key)

    # Resolved once per storage instance, which get_storage() replaces when
    # CACHES or our settings change: a check then costs no lookups but its own.
    @cached_property
    def _client(self) -> Any:
        return redis_client(self.alias)

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
        generation = base.new_generation()
        with wrap_errors():
            client = self.client()
            # One command per key: keys of different prefixes may live on different cluster nodes.
            # The generation first: a load that began before it can no longer install (policy.lua).
            pipe = client.pipeline(transaction=False)
            for prefix in prefixes:
                pipe.set(self.make_key(base.generation_key(prefix)), generation, ex=base.GENERATION_TIMEOUT)
                pipe.delete(self.make_key(policy_key(prefix)))
            pipe.execute()

    def give_back(self, prefix: str, category: str, decision: Decision) -> bool:
        keys = [
            self.make_key(policy_key(prefix)),
            self.make_key(bucket_key(prefix, category, EXACT)),
            self.make_key(bucket_key(prefix, category, COUNTER)),
        ]
        with wrap_errors():
            # Rare (another throttle refused): the client's own script call is fast enough.
            script = self.client().register_script(GIVE_BACK_SCRIPT)
            return bool(script(keys=keys, args=[base.stamp_ms(decision)]))

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        # The bucket carries its own policy, installed by the same script call.
        keys, args, _command = self._build_check_call(name, READ, True, rate.window)
        fields = Policy(ACTIVE, window=rate.window, limits={READ: rate.limit}).to_fields()
        # No eviction ever sets an ad-hoc bucket's generation: it is always "".
        return self._verdict(
            self._run(ScriptCall.of(SCRIPT_SHA, keys, (*args, "", *flatten(fields))))
        ).decision

    def _check(self, prefix: str, category: str, *, charge: bool) -> Outcome:
        call = self._check_call(prefix, category, charge, conf.POLICY_TIMEOUT)
        reply = self._run(call)
        attempts = 0
        while reply.startswith(b"miss"):
            # "miss <generation>": the script installs what we load only if no
            # eviction has replaced that generation meanwhile; else it misses again.
            attempts += 1
            if attempts > base.INSTALL_ATTEMPTS:
                raise StorageUnavailable(
                    f"the policy of {prefix} changed during each of {base.INSTALL_ATTEMPTS} loads"
                )
            fields = load_policy(prefix).to_fields()
            reply = self._run(
                ScriptCall.of(SCRIPT_SHA, call.keys, (*call.args, reply[5:].decode(), *flatten(fields)))
            )
        return self._outcome(reply)

    def _build_check_call(self, prefix: str, category: str, charge: bool, timeout: int) -> ScriptCall:
        keys = [
            self.make_key(policy_key(prefix)),
            self.make_key(bucket_key(prefix, category, EXACT)),
            self.make_key(bucket_key(prefix, category, COUNTER)),
            self.make_key(base.generation_key(prefix)),
        ]
        return ScriptCall.of(SCRIPT_SHA, keys, [category, "1" if charge else "0", timeout])

    def _run(self, call: ScriptCall) -> bytes:
        """EVALSHA the script: its encoded call, sent on a connection the storage keeps.

        See :class:`~ratelimit_tiers.storage.transport.KeptConnections`; any
        failure becomes :class:`StorageUnavailable`.
        """
        try:
            try:
                return self.transport.send(call.command)
            except NoScriptError:
                self.client().script_load(SCRIPT)
                return self.transport.send(call.command)
        except Exception as exc:  # Inline, not wrap_errors(): this is the hot path.
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def _outcome(cls, reply: bytes) -> Outcome:
        if not reply[:1].isdigit():
            return Unusable(reply.decode())
        return cls._verdict(reply)

    @staticmethod
    def _verdict(reply: bytes) -> Verdict:
        allowed, limit, window, remaining, reset, now, shadow, tier = reply.split(b" ", 7)
        # Positional: a named tuple's keywords cost more than the parsing (see Decision).
        window_s, reset_s, now_s = int(window) // 1000, int(reset) / 1000, int(now) / 1000
        decision = Decision(allowed == b"1", int(limit), window_s, int(remaining), reset_s, now_s)
        return Verdict(decision, tier.decode(), shadow == b"1")
