"""Refusals served from the process's memory: no store round trip, same answer, bounded staleness.

Store commands are counted on the real redis-server (``INFO commandstats``),
time is a fake monotonic clock injected into the notes.
"""

from __future__ import annotations

import io
import logging
import math
import random
import threading
import time

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from redis import Redis
from rest_framework.test import APIClient

from ratelimit_tiers import crypto, signals
from ratelimit_tiers.algorithms import CATEGORIES, Decision
from ratelimit_tiers.local_refusals import RENEWAL_SECONDS, RefusalNotes, notes, unknown_prefixes
from ratelimit_tiers.models import APIKey, LimitRule
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.cache import CacheStorage
from tests.conftest import URL, key_client, only_rule, set_rule


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(notes, "clock", fake)
    monkeypatch.setattr(unknown_prefixes, "clock", fake)
    return fake


@pytest.fixture
def redis(redis_cache):
    with Redis.from_url(redis_cache) as client:
        yield client


def evalshas(redis):
    """How many ``EVALSHA`` the server has run: one per check that reached the store."""
    return int(redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def exhaust(api, tier, limit=3):
    only_rule(tier, limit)
    assert [api.get(URL).status_code for _ in range(limit)] == [200] * limit
    refused = api.get(URL)
    assert refused.status_code == 429
    return refused


def prefix_of(api):
    return api._credentials["HTTP_AUTHORIZATION"].split()[1].split(".")[0]


def key_of(api):
    """The client's key as the store names it: ``(prefix, account id)``."""
    prefix = prefix_of(api)
    return prefix, APIKey.objects.get(prefix=prefix).account_id


def test_refusals_are_served_without_the_store_until_the_bound(redis, clock, api, free_tier):
    store_refusal = exhaust(api, free_tier)
    note = notes._items[(prefix_of(api), "read")]
    before = evalshas(redis)
    for step in range(50):
        clock.advance(0.019)  # 0.95 s in all: within the bound.
        response = api.get(URL)
        assert response.status_code == 429
        for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            assert response[header] == store_refusal[header], (step, header)
        assert response["X-RateLimit-Remaining"] == "0"
        # Honest: never shorter than the time left until the store admits (T, on this clock).
        left = note.ends - clock()
        assert left <= int(response["Retry-After"]) < max(1, left + 1.002)
        assert response.json() == {**store_refusal.json(), "retry_after": int(response["Retry-After"])}
    assert evalshas(redis) == before  # 50 refusals, no store command.

    clock.advance(0.05)  # Past the bound: the next request asks the store, which refuses again.
    statuses = [api.get(URL).status_code for _ in range(20)]
    assert statuses == [429] * 20
    assert evalshas(redis) == before + 1
    clock.advance(0.9)  # Renewed from that answer: another bound of refusals served locally.
    assert api.get(URL).status_code == 429
    assert evalshas(redis) == before + 1


def test_retry_after_served_locally_is_enough(redis, api, free_tier):
    # The real monotonic clock, and a 2-second window the store's own clock must see pass.
    only_rule(free_tier, "1/2s")
    assert api.get(URL).status_code == 200
    assert api.get(URL).status_code == 429  # From the store: noted.
    before = evalshas(redis)
    response = api.get(URL)
    assert (response.status_code, evalshas(redis)) == (429, before)  # Served locally.
    retry_after = int(response["Retry-After"])
    # Never shorter than what the store itself would answer now (a look, which counts nothing).
    assert retry_after >= get_storage().peek(*key_of(api), "read").decision.reset_after
    time.sleep(retry_after)
    assert api.get(URL).status_code == 200


@pytest.mark.parametrize("change", ["upgrade", "override", "reset command", "reset action"])
def test_a_change_in_this_process_drops_the_note_at_once(
    redis, clock, api, account, free_tier, change, client
):
    exhaust(api, free_tier)
    assert api.get(URL).status_code == 429  # Served locally.
    key = APIKey.objects.get()
    if change == "upgrade":
        only_rule(free_tier, 10)
    elif change == "override":
        set_rule(account, 10)
    elif change == "reset command":
        call_command("ratelimit_tiers_reset_key", key.prefix, stdout=io.StringIO())
    else:
        from django.contrib.auth.models import User

        client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
        client.post(
            "/admin/ratelimit_tiers/apikey/", {"action": "reset_counters", "_selected_action": [key.pk]}
        )
    assert api.get(URL).status_code == 200  # The fake clock has not moved: only the change can admit it.


def test_a_change_elsewhere_reaches_this_process_within_the_bound(redis, clock, api, free_tier):
    exhaust(api, free_tier)
    get_storage().clear(*key_of(api), CATEGORIES)  # Another process's reset: no signal reaches this one.
    clock.advance(0.99)
    assert api.get(URL).status_code == 429  # Still within the bound: served locally.
    clock.advance(0.01)
    # The first request past the bound asks the store, which admits it; so are the next ones.
    assert [api.get(URL).status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize("how", ["tier", "setting"])
def test_shadow_mode_never_notes(redis, clock, api, free_tier, settings, how):
    if how == "tier":
        free_tier.shadow = True
    else:
        settings.RATELIMIT_TIERS_SHADOW = True
    free_tier.save()
    only_rule(free_tier, 2)
    assert api.get(URL).status_code == 200  # Loads the policy (a second EVALSHA).
    before = evalshas(redis)
    assert {api.get(URL).status_code for _ in range(10)} == {200}  # 1 admitted, 9 shadow refusals.
    assert evalshas(redis) == before + 10
    assert not notes._items


def test_zero_seconds_disables_it(redis, clock, api, free_tier, settings):
    settings.RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = 0
    exhaust(api, free_tier)
    before = evalshas(redis)
    assert {api.get(URL).status_code for _ in range(10)} == {429}
    assert evalshas(redis) == before + 10


def test_a_flood_of_bad_keys_costs_neither_store_nor_database(redis, clock, raw_key, settings):
    settings.RATELIMIT_TIERS_INVALID_KEY_RATE = "5/min"
    prefix = raw_key.split(".")[0]
    headers = {
        "unknown prefix": "Api-Key AAAAAAAAAAAA." + "a" * 43,
        "wrong secret": f"Api-Key {prefix}." + "b" * 43,
    }
    for n, (kind, header) in enumerate(headers.items()):
        client = APIClient(REMOTE_ADDR=f"198.51.100.{n + 1}")
        client.credentials(HTTP_AUTHORIZATION=header)
        assert [client.get(URL).status_code for _ in range(6)] == [401] * 5 + [429], kind
        before = evalshas(redis)
        with CaptureQueriesContext(connection) as queries:
            responses = [client.get(URL) for _ in range(100)]
        assert {r.status_code for r in responses} == {429}, kind
        assert {r.json()["code"] for r in responses} == {"rate_limited"}
        assert min(int(r["Retry-After"]) for r in responses) >= 1
        assert (evalshas(redis) - before, len(queries)) == (0, 0), kind
        clock.advance(1.0)  # Past the bound: one store command renews the bucket's note.
        assert client.get(URL).status_code == 429
        assert evalshas(redis) == before + 1, kind


def test_a_key_created_in_this_process_is_never_refused_as_unknown(db, clock, account):
    raw_key, prefix, hashed = crypto.generate_key()
    api = key_client(raw_key)
    assert api.get(URL).json()["code"] == "unknown_key"
    with CaptureQueriesContext(connection) as queries:
        assert api.get(URL).json()["code"] == "unknown_key"
    assert not [q for q in queries if "ratelimit_tiers_apikey" in q["sql"]]  # Remembered as unknown.
    APIKey.objects.create(account=account, name="late", prefix=prefix, hashed_secret=hashed)
    assert api.get(URL).status_code == 200


def decision(reset_after=30.0, allowed=False):
    return Decision(allowed, 10, 60, 0, reset_after, 1_800_000_000.0)


def test_memory_is_an_lru_of_bounded_size(settings):
    clock = FakeClock()
    memory = RefusalNotes(size=3, clock=clock)
    for name in "abcd":
        memory.note(name, "read", decision())
    assert [key[0] for key in memory._items] == ["b", "c", "d"]
    memory.note("b", "read", decision())  # Renewed: the most recent now.
    memory.note("e", "read", decision())
    assert [key[0] for key in memory._items] == ["d", "b", "e"]
    memory.note("f", "read", decision(allowed=True))  # Only refusals are noted.
    assert memory.refusal("f", "read") is None


def test_a_renewal_keeps_the_others_refused_only_until_its_answer(settings):
    clock = FakeClock()
    memory = RefusalNotes(clock=clock)
    memory.note("k", "read", decision())
    clock.advance(1.0)
    assert memory.refusal("k", "read") is None  # This request renews: it asks the store...
    assert memory.refusal("k", "read") is not None  # ...while the others are still refused...
    clock.advance(RENEWAL_SECONDS)
    assert memory.refusal("k", "read") is None  # ...at most RENEWAL_SECONDS, then they ask too.
    assert memory.refusal("k", "read") is None


def test_a_refusal_asked_for_before_an_eviction_is_not_noted_after_it(settings):
    memory = RefusalNotes(clock=FakeClock())
    epoch = memory.epoch
    memory.forget(["k"])  # E.g. a tier upgrade while the store call was in flight.
    memory.note("k", "read", decision(), epoch=epoch)
    assert memory.refusal("k", "read") is None


def test_threads_share_it_safely(settings):
    memory = RefusalNotes(size=50)
    errors = []

    def work(seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + 0.5
        try:
            while time.monotonic() < deadline:
                name = str(rng.randrange(80))
                op = rng.random()
                if op < 0.4:
                    memory.note(name, "read", decision(reset_after=rng.choice([0.001, 0.5, 30.0])))
                elif op < 0.9:
                    served = memory.refusal(name, "read")
                    assert served is None or not served[0].allowed
                elif op < 0.95:
                    memory.drop(name, "read")
                else:
                    memory.forget([name])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(memory._items) <= 50


# A randomized schedule, run with notes and without, on LocMem's counter with one fake clock for the
# store and the notes (time in whole milliseconds, as the store counts it).

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
WAITS_MS = [1, 37, 100, 200, 600, 999, 1000, 1001, 2100]


def schedule(seed, elsewhere):
    rng = random.Random(seed)
    events = []
    for _ in range(200):
        roll = rng.random()
        if roll < 0.75:
            events.append(("request", rng.randrange(2), rng.choice(["read", "read", "write"])))
        elif roll < 0.92:
            events.append(("wait", rng.choice(WAITS_MS)))
        elif roll < 0.95 or not elsewhere:
            events.append(("change here", rng.choice([2, 3, 5])))
        elif roll < 0.975:
            events.append(("change elsewhere", rng.choice([2, 3, 5])))
        else:
            events.append(("reset elsewhere", rng.randrange(2)))
    return events


class Run:
    """One pass over a schedule: responses, and for each local refusal whether the store would admit."""

    def __init__(self, monkeypatch, tier, raw_keys):
        self.ms = 0
        self.tier, self.prefixes = tier, [raw.split(".")[0] for raw in raw_keys]
        self.account = APIKey.objects.get(prefix=self.prefixes[0]).account_id
        self.clients = [key_client(raw) for raw in raw_keys]
        self.hits = 0
        self.last_elsewhere = -math.inf
        monkeypatch.setattr(
            CacheStorage, "timer", staticmethod(lambda: 1_800_000_000 + (self.ms + 0.5) / 1000)
        )
        monkeypatch.setattr(notes, "clock", lambda: 1000 + (self.ms + 0.5) / 1000)
        original = CacheStorage.hit

        def hit(storage, prefix, account, category, cost=1):
            self.hits += 1
            return original(storage, prefix, account, category, cost)

        monkeypatch.setattr(CacheStorage, "hit", hit)

    def go(self, events):
        caches["default"].clear()
        notes.clear()
        LimitRule.objects.filter(tier=self.tier).delete()
        LimitRule.objects.create(tier=self.tier, count=3, window_seconds=2)  # No signal: the cache is clear.
        results = []
        for event in events:
            kind = event[0]
            if kind == "wait":
                self.ms += event[1]
            elif kind == "request":
                results.append(self.request(event[1], event[2]))
            elif kind == "change here":
                set_rule(self.tier, f"{event[1]}/2s")
            elif kind == "change elsewhere":  # Another process's save: its eviction reaches the store only.
                LimitRule.objects.filter(tier=self.tier).update(count=event[1])
                get_storage().forget([(prefix, self.account) for prefix in self.prefixes])
                self.last_elsewhere = self.ms
            else:  # Another process's reset.
                get_storage().clear(self.prefixes[event[1]], self.account, CATEGORIES)
                self.last_elsewhere = self.ms
        return results

    def request(self, index, category):
        hits = self.hits
        client = self.clients[index]
        response = client.get(URL) if category == "read" else client.post(URL, {"name": ""}, format="json")
        local = self.hits == hits
        would_admit = None
        if local:
            assert response.status_code == 429  # A note never admits.
            would_admit = get_storage().peek(self.prefixes[index], self.account, category).decision.allowed
        headers = tuple(response.get(h) for h in HEADERS)
        return response.status_code, headers, local, would_admit, self.ms - self.last_elsewhere


@pytest.mark.parametrize("seed", range(12))
def test_notes_change_no_answer_outside_the_bound(seed, db, account, free_tier, monkeypatch, settings):
    elsewhere = seed % 2 == 1
    events = schedule(seed, elsewhere)
    raw_keys = [APIKey.objects.create_key(account=account, name=f"k{n}")[1] for n in range(2)]
    with_notes = Run(monkeypatch, free_tier, raw_keys).go(events)
    settings.RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = 0
    without = Run(monkeypatch, free_tier, raw_keys).go(events)
    assert not any(result[2] for result in without)
    assert sum(result[2] for result in with_notes) > 0  # The schedule exercised the notes.
    for n, (status, _headers, local, would_admit, since_change_ms) in enumerate(with_notes):
        if local and would_admit:
            # Only a change the process did not see can make the store admit what a note refuses,
            # and only within the bound.
            assert since_change_ms <= 1000, (n, status)
    if not elsewhere:
        # Every answer the same, headers included, with and without notes.
        assert [r[:2] for r in with_notes] == [r[:2] for r in without]


def test_a_refusal_builds_no_log_fields_for_a_record_the_logger_drops(api, free_tier, monkeypatch, caplog):
    built = []
    original = signals._fields
    monkeypatch.setattr(signals, "_fields", lambda *args: built.append(args) or original(*args))
    only_rule(free_tier, 1)
    caplog.set_level(logging.WARNING, logger="ratelimit_tiers")
    assert [api.get(URL).status_code for _ in range(3)] == [200, 429, 429]
    assert built == []
    caplog.set_level(logging.INFO, logger="ratelimit_tiers")
    assert api.get(URL).status_code == 429
    assert len(built) == 1
    [record] = [r for r in caplog.records if r.name == "ratelimit_tiers"]
    assert record.ratelimit["limit"] == 1


def test_a_slow_answer_never_keeps_a_note_refusing_past_the_stores_reset(settings):
    # The store decided somewhere between the ask and the answer, 50 ms later: its reset, 1 s after its
    # decision, may be as early as 1 s after the ask. Retry-After counts from the answer (never too
    # short); refusals served from memory stop 1 s after the ask, and then the store decides again.
    settings.RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = 5
    clock = FakeClock()
    memory = RefusalNotes(clock=clock)
    asked = clock()
    clock.advance(0.05)
    memory.note("k", "read", decision(reset_after=1.0), asked=asked)
    clock.advance(0.94)  # 0.99 s after the ask.
    served = memory.refusal("k", "read")
    assert served is not None
    assert served[0].retry_after == 1 and served[0].reset_after == pytest.approx(0.06)
    clock.advance(0.02)  # 1.01 s after the ask, 0.96 s after the answer.
    assert memory.refusal("k", "read") is None  # The store is asked, not the note.
