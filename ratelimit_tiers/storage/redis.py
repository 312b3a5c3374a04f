"""Redis: each check is one script call (``scripts/``) on the server's clock, every rule of it at once."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from django.core.cache import caches
from redis.exceptions import NoScriptError

from ratelimit_tiers.algorithms import READ, Decision, Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import CostExceedsLimit, StorageUnavailable
from ratelimit_tiers.ledger import Counts, LedgerScope, Refusals, Slot, carried_words, parse_hash
from ratelimit_tiers.names import (
    ACTIVE,
    COST,
    COUNTER_KIND,
    EXACT_KIND,
    POOL,
    QUOTA_KIND,
    account_tag,
    counter_base,
    counter_key,
    generation_key,
    ledger_field,
    ledger_key,
    policy_key,
)
from ratelimit_tiers.policies import Policy, load_policy
from ratelimit_tiers.refusal_tally import TallyKey, tally
from ratelimit_tiers.rules import CALENDARS, KEY, Rule
from ratelimit_tiers.storage import base
from ratelimit_tiers.storage.backends import redis_client
from ratelimit_tiers.storage.base import Outcome, Storage, Unusable, Verdict, wrap_errors
from ratelimit_tiers.storage.eviction import warn_if_evicting
from ratelimit_tiers.storage.transport import Arg, KeptConnections, ScriptCall

SCRIPTS = Path(__file__).parent / "scripts"


def assemble(*parts: str) -> bytes:
    """One script from parts in ``scripts/``, in order: each part defines what the later ones use."""
    return b"\n".join((SCRIPTS / f"{part}.lua").read_bytes() for part in parts)


#: The check: its arguments, the policy, the three kinds of counter, the usage ledger, then its entry.
PARTS = ("arguments", "policy", "counter", "exact", "quota", "ledger")
SCRIPT = assemble(*PARTS, "hit")
SCRIPT_SHA = hashlib.sha1(SCRIPT).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1.
GIVE_BACK_SCRIPT = assemble(*PARTS, "give_back").decode()
#: Refusals served without the store, that no check carried, into the ledger (``refusal_tally``).
TALLY_SCRIPT = assemble("arguments", "ledger", "tally").decode()

#: The position in a check's ARGV of what the ledger counts (``ledger.lua``).
LEDGER_ARG = 9
#: Ledger hashes read per pipeline.
READ_BATCH = 1000

#: Checks whose encoded script call each storage keeps: (API key, category, cost, hit or peek).
CALL_CACHE_SIZE = 8192
#: Rule lists whose reply fields are kept parsed (:func:`rule_fields`): each key's policy of a category.
RULE_FIELDS_CACHE_SIZE = 4096


def flatten(fields: Mapping[str, Arg]) -> tuple[Arg, ...]:
    return tuple(x for item in fields.items() for x in item)


class RedisStorage(Storage):
    """Every rule of a check in one Lua script call: exact sliding logs, counters and quotas.

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

    def hit(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        carried = tally.take(prefix, account, category) if tally else ()
        if not carried:
            return self._check(prefix, account_tag(account), category, cost, charge=True)
        # Refusals this process served for the key: counted by this script call too.
        key = TallyKey(prefix, account, category)
        try:
            outcome = self._check(prefix, account_tag(account), category, cost, charge=True, carried=carried)
        except CostExceedsLimit:
            tally.restore(key, carried)  # The script stopped before the ledger: they are sent later.
            raise
        if not isinstance(outcome, Verdict):
            tally.restore(key, carried)
        return outcome

    def peek(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        return self._check(prefix, account_tag(account), category, cost, charge=False)

    def clear(self, prefix: str, account: int, categories: Iterable[str]) -> None:
        tag = account_tag(account)
        with wrap_errors():
            policy = load_policy(prefix)
            keys = [
                self.make_key(counter_key(counter_base(tag, prefix, category), rule.name, kind, start))
                for category in categories
                for rule in policy.applicable(category)
                if rule.scope == KEY
                for kind, start in self._counters(rule)
            ]
            if keys:
                self.client().delete(*keys)

    def _counters(self, rule: Rule) -> list[tuple[str, int | None]]:
        if rule.calendar:
            return [(QUOTA_KIND, self.calendar.period(rule.calendar)[0])]
        return [(EXACT_KIND, None), (COUNTER_KIND, None)]

    def forget(self, keys: Iterable[tuple[str, int]]) -> None:
        generation = base.new_generation()
        with wrap_errors():
            client = self.client()
            # One command per key: keys of different accounts may live on different cluster nodes.
            # The generation first: a load that began before it can no longer install (policy.lua).
            pipe = client.pipeline(transaction=False)
            for prefix, account in keys:
                tag = account_tag(account)
                pipe.set(self.make_key(generation_key(tag, prefix)), generation, ex=base.GENERATION_TIMEOUT)
                pipe.delete(self.make_key(policy_key(tag, prefix)))
            pipe.execute()

    def give_back(self, prefix: str, account: int, category: str, cost: int, decision: Decision) -> bool:
        call = self._build_check_call(prefix, account_tag(account), category, cost, True, ())
        spec = self._ledger_spec(prefix, category)
        args = [category, base.stamp_ms(decision), cost, *self.calendar.bounds(), spec]
        with wrap_errors():
            # Rare (another throttle refused): the client's own script call is fast enough.
            script = self.client().register_script(GIVE_BACK_SCRIPT)
            return bool(script(keys=list(call.keys), args=args))

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        # The bucket carries its own policy, installed by the same script call.
        bounds = self.calendar.bounds()
        call = self._build_check_call(name, name, READ, 1, True, bounds, ledger=False)
        policy = Policy(ACTIVE, rules=(Rule(rate.limit, rate.window),))
        # No eviction ever sets an ad-hoc bucket's generation: it is always "".
        reply = self._run(self._with_policy(call, "", policy))
        verdict = self._verdict(reply, bounds)
        assert verdict.decision is not None  # One rule: one decision.
        return verdict.decision

    def read_ledger(self, scopes: Sequence[LedgerScope], hours: Sequence[int]) -> dict[Slot, Counts]:
        names = [
            (scope.account, hour, f"{self.make_key(ledger_key(account_tag(scope.account)))}:{hour}")
            for scope in scopes
            for hour in hours
        ]
        found: dict[Slot, Counts] = {}
        with wrap_errors():
            client = self.client()
            for start in range(0, len(names), READ_BATCH):
                batch = names[start : start + READ_BATCH]
                # One command per hash: an account's hashes share its slot, others' may be elsewhere.
                pipe = client.pipeline(transaction=False)
                for _account, _hour, key in batch:
                    pipe.hgetall(key)
                for (account, hour, _key), fields in zip(batch, pipe.execute(), strict=True):
                    found.update(parse_hash(hour, account, fields))
        return found

    def add_refusals(self, key: TallyKey, refusals: Sequence[Refusals]) -> None:
        spec = self._ledger_spec(key.prefix, key.category)
        if not spec or not refusals:
            return
        with wrap_errors():
            script = self.client().register_script(TALLY_SCRIPT)
            script(
                keys=[self.make_key(ledger_key(account_tag(key.account)))],
                args=[f"{spec} {carried_words(refusals)}"],
            )

    def _ledger_spec(self, prefix: str, category: str) -> str:
        """What ``ledger.lua`` counts a check of the key in (its retention, shadow setting, field), or ""."""
        days = conf.LEDGER_DAYS
        if not days:
            return ""
        return f"{days * 86400} {'1' if conf.SHADOW else '0'} {ledger_field(prefix, category)}"

    def _check(
        self,
        prefix: str,
        tag: str,
        category: str,
        cost: int,
        *,
        charge: bool,
        carried: Sequence[Refusals] = (),
    ) -> Outcome:
        bounds = self.calendar.bounds()
        call = self._check_call(prefix, tag, category, cost, charge, bounds)
        if carried and call.args[LEDGER_ARG]:
            args = list(call.args)
            args[LEDGER_ARG] = f"{args[LEDGER_ARG]} {carried_words(carried)}"
            call = ScriptCall.of(SCRIPT_SHA, call.keys, args)
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
            reply = self._run(self._with_policy(call, reply[5:].decode(), load_policy(prefix)))
        return self._outcome(reply, cost, bounds)

    def _build_check_call(
        self,
        prefix: str,
        tag: str,
        category: str,
        cost: int,
        charge: bool,
        bounds: tuple[int, ...],
        ledger: bool = True,
    ) -> ScriptCall:
        keys = [
            self.make_key(policy_key(tag, prefix)),
            self.make_key(generation_key(tag, prefix)),
            self.make_key(counter_base(tag, prefix, category)),
            self.make_key(counter_base(tag, POOL, category)),
            self.make_key(ledger_key(tag)),
        ]
        # Peeks count nothing, nor do ad-hoc buckets (they are no API key's).
        spec = self._ledger_spec(prefix, category) if charge and ledger else ""
        return ScriptCall.of(SCRIPT_SHA, keys, [category, "1" if charge else "0", cost, *bounds, spec])

    def _with_policy(self, call: ScriptCall, generation: str, policy: Policy) -> ScriptCall:
        """The call with ``policy`` to install under ``generation``."""
        ttl = round(policy.timeout(time.time()) * 1000)
        args = (*call.args, generation, ttl, *flatten(policy.to_fields()))
        return ScriptCall.of(SCRIPT_SHA, call.keys, args)

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
    def _outcome(cls, reply: bytes, cost: int, bounds: tuple[int, ...]) -> Outcome:
        if reply[:1].isdigit():
            return cls._verdict(reply, bounds)
        if reply.startswith(COST.encode()):
            _word, count, rule = reply.decode().split(" ", 2)
            raise CostExceedsLimit(cost, int(count), rule)
        return Unusable(reply.decode())

    @staticmethod
    def _verdict(reply: bytes, bounds: tuple[int, ...]) -> Verdict:
        """Parse hit.lua's reply; ``bounds`` are the calendar's that the check sent (a quota's window)."""
        numbers, encoded, tier = reply.split(b"\n", 2)
        _allowed, now, shadow, *states = numbers.split(b" ")
        now_s = int(now) / 1000
        decisions = []
        for at, (limit, window, name, calendar) in enumerate(rule_fields(encoded)):
            allowed, remaining, reset = states[3 * at : 3 * at + 3]
            if calendar >= 0:  # A quota: its window is the current period.
                window = (bounds[calendar + 1] - bounds[calendar]) // 1000
            # Positional: a named tuple's keywords cost more than the parsing (see Decision).
            decisions.append(
                Decision(
                    allowed == b"1",
                    limit,
                    window,
                    int(remaining),
                    int(reset) / 1000,
                    now_s,
                    name,
                    calendar >= 0,
                )
            )
        return Verdict(tuple(decisions), tier.decode(), shadow == b"1")


#: Where a quota's period is in the calendar's bounds (``Calendar.bounds``), by its encoded kind.
QUOTA_BOUNDS = {calendar[:1]: 2 * at for at, calendar in enumerate(CALENDARS)}


@lru_cache(maxsize=RULE_FIELDS_CACHE_SIZE)
def rule_fields(encoded: bytes) -> tuple[tuple[int, int, str, int], ...]:
    """The rules of a reply as ``policies.encode`` wrote them: ``(limit, window s, name, quota)`` each.

    ``quota`` is where the rule's period lies in the calendar's bounds, or -1
    for a sliding window. The same on every check of a key: cached, so a check
    parses only what changed (allowed, remaining, reset) of each of its rules.
    """
    fields = []
    for rule in filter(None, encoded.decode().split(";")):
        kind, window, _scope, limit, name = rule.split(" ", 4)
        fields.append((int(limit), int(window) // 1000, name, QUOTA_BOUNDS.get(kind, -1)))
    return tuple(fields)
