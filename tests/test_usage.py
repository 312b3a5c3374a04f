"""Reading the ledger (hourly, daily, the CSV) and rolling its hours up into DailyUsage, each once."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import DatabaseError
from django_redis import get_redis_connection

from ratelimit_tiers import rollup, usage
from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.ledger import HOUR
from ratelimit_tiers.models import Account, APIKey, DailyUsage, RolledHour
from ratelimit_tiers.names import account_tag, ledger_field, ledger_key
from ratelimit_tiers.storage import get_storage
from tests.conftest import only_rule

pytestmark = pytest.mark.django_db


def put(account, hour, prefix, category, admitted=0, refused_by=None, last=None):
    """Write a ledger hash as the script would have (Redis): a past hour's counts."""
    client = get_redis_connection("default")
    key = f"{caches['default'].make_key(ledger_key(account_tag(account.pk)))}:{hour}"
    field = ledger_field(prefix, category)
    if admitted:
        client.hincrby(key, field + "a", admitted)
    for rule, n in (refused_by or {}).items():
        client.hincrby(key, f"{field}r:{rule}", n)
    if last is not None:
        client.hset(key, field + "t", last)
    client.expire(key, 8 * 86400)


def totals(rows):
    return {(row.start.date(), row.prefix, row.category): (row.admitted, row.refused) for row in rows}


def this_hour():
    return int(time.time() // HOUR)


@pytest.fixture
def key(account, free_tier):
    only_rule(free_tier, 3)
    return APIKey.objects.create_key(account=account, name="k")[0]


def hits(key, count, category="read"):
    storage = get_storage()
    return [storage.hit(key.prefix, key.account_id, category).allowed for _ in range(count)]


def test_daily_adds_the_hours_not_rolled_up_to_the_rolled_up_rows(backend, key, account):
    assert hits(key, 5) == [True] * 3 + [False] * 2
    today = datetime.now(timezone.utc).date()
    hour = usage.hour_start(this_hour())
    DailyUsage.objects.create(
        day=today, account=account, account_name="acme", key=key, key_prefix=key.prefix, category="read",
        admitted=10, refused=1, refused_by={"all-60s": 1},
    )  # fmt: skip
    RolledHour.objects.create(hour=usage.hour_start(this_hour() - 1))  # Not this hour.
    (row,) = usage.daily(today, today)
    assert (row.admitted, row.refused, row.refused_by) == (13, 3, {"all-60s": 3})
    assert (row.account_id, row.account_name, row.start) == (account.pk, "acme", usage.day_start(today))
    assert row.last_refused is not None and row.last_refused >= hour
    RolledHour.objects.create(hour=hour)  # This hour's counts are in the row now (as a rollup would).
    assert totals(usage.daily(today, today)) == {(today, key.prefix, "read"): (10, 1)}


def test_the_csv_has_a_row_per_key_category_and_day(backend, key, account):
    assert hits(key, 4) == [True] * 3 + [False]
    hits(key, 1, "write")
    today = datetime.now(timezone.utc).date()
    assert list(usage.csv_rows(today, today)) == [
        ["date", "account", "key_prefix", "category", "admitted", "refused"],
        [today.isoformat(), "acme", key.prefix, "read", "3", "1"],
        [today.isoformat(), "acme", key.prefix, "write", "1", "0"],
    ]
    out = io.StringIO()
    call_command("ratelimit_tiers_usage", "--csv", "--days", "2", stdout=out)
    assert out.getvalue().splitlines() == [",".join(row) for row in usage.csv_rows(today, today)]
    with pytest.raises(CommandError, match="--days goes with --csv"):
        call_command("ratelimit_tiers_usage", "--days", "2")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("ratelimit_tiers_usage", "--csv", "--days", "0")


def test_names_that_start_a_formula_are_written_as_text(backend, key, account):
    """An account named like a spreadsheet formula is billed under its name, quoted, never run."""
    hits(key, 1)
    today = datetime.now(timezone.utc).date()
    for name in ('=HYPERLINK("http://evil.example","x")', "+1", "-1", "@SUM(A1)", "\tx"):
        Account.objects.filter(pk=account.pk).update(name=name)
        rows = list(usage.csv_rows(today, today))
        assert [row[1] for row in rows[1:]] == [f"'{name}"]
        out = io.StringIO()
        call_command("ratelimit_tiers_usage", "--csv", "--days", "1", stdout=out)
        assert next(csv.reader(out.getvalue().splitlines()[1:]))[1] == f"'{name}"
    Account.objects.filter(pk=account.pk).update(name="a=b-c")  # Only a cell's start makes a formula.
    assert [row[1] for row in list(usage.csv_rows(today, today))[1:]] == ["a=b-c"]


def test_only_the_given_accounts(backend, key, account, free_tier):
    other = Account.objects.create(name="other", tier=free_tier)
    other_key = APIKey.objects.create_key(account=other, name="o")[0]
    hits(key, 1)
    hits(other_key, 2)
    today = datetime.now(timezone.utc).date()
    DailyUsage.objects.create(
        day=today, account=account, account_name="acme", key_prefix=key.prefix, category="write", admitted=4
    )
    assert totals(usage.daily(today, today, [other.pk])) == {(today, other_key.prefix, "read"): (2, 0)}
    assert totals(usage.daily(today, today, [account.pk])) == {
        (today, key.prefix, "read"): (1, 0),
        (today, key.prefix, "write"): (4, 0),
    }
    since, until = usage.hour_start(this_hour() - 1), usage.hour_start(this_hour() + 2)
    assert [(row.account_name, row.admitted) for row in usage.hourly(since, until, [account.pk])] == [
        ("acme", 1)
    ]


def test_a_rollup_moves_each_finished_hour_once(backend, key, account):
    assert hits(key, 5) == [True] * 3 + [False] * 2
    today = datetime.now(timezone.utc).date()
    before = usage.daily(today, today)
    hour = this_hour()
    assert hour not in rollup.roll_up(now=hour * HOUR + 60).rolled  # This hour has not ended.
    assert not DailyUsage.objects.exists()
    later = (hour + 1) * HOUR + rollup.GRACE_SECONDS + 1
    done = rollup.roll_up(now=later)
    assert hour in done.rolled and done.taken == [] and done.lost == []
    row = DailyUsage.objects.get()
    assert (row.day, row.account_id, row.account_name, row.key_id) == (today, account.pk, "acme", key.pk)
    assert (row.admitted, row.refused, row.refused_by) == (3, 2, {"all-60s": 2})
    assert row.last_refused is not None
    assert usage.daily(today, today) == before  # Read from the row now, not the store: the same.
    assert rollup.roll_up(now=later).rolled == []  # Idempotent.
    assert (DailyUsage.objects.get().admitted, DailyUsage.objects.count()) == (3, 1)


@pytest.mark.redis
def test_a_failure_inside_an_hour_leaves_it_whole_for_the_next_run(redis_cache, account, monkeypatch):
    hour = this_hour() - 3
    for prefix in ("aaaa", "bbbb"):
        put(account, hour, prefix, "read", admitted=5, refused_by={"all-60s": 2})
    real = rollup._add
    calls = []

    def fails_on_the_second_row(*args):
        calls.append(args)
        if len(calls) == 2:
            raise DatabaseError("connection lost")
        real(*args)

    monkeypatch.setattr(rollup, "_add", fails_on_the_second_row)
    with pytest.raises(DatabaseError):
        rollup.roll_up()
    assert not DailyUsage.objects.exists()  # The first row went with the transaction.
    assert not RolledHour.objects.filter(hour=usage.hour_start(hour)).exists()
    monkeypatch.setattr(rollup, "_add", real)
    assert hour in rollup.roll_up().rolled
    assert sorted(DailyUsage.objects.values_list("key_prefix", "admitted", "refused")) == [
        ("aaaa", 5, 2),
        ("bbbb", 5, 2),
    ]


@pytest.mark.redis
def test_the_store_down_mid_rollup_loses_no_hour(redis_cache, broken_store, account, settings):
    settings.RATELIMIT_TIERS_CACHE = "default"
    hours = [this_hour() - 5, this_hour() - 4]
    for hour in hours:
        put(account, hour, "aaaa", "read", admitted=7, refused_by={"all-day": 1}, last=hour * HOUR * 1000 + 5)

    def store_goes_down(hour, rolled):
        if hour == hours[0]:
            settings.RATELIMIT_TIERS_CACHE = broken_store

    with pytest.raises(StorageUnavailable):
        rollup.roll_up(on_hour=store_goes_down)
    assert usage.hour_start(hours[0]) in RolledHour.objects.values_list("hour", flat=True)
    assert not RolledHour.objects.filter(hour__gt=usage.hour_start(hours[0])).exists()
    assert DailyUsage.objects.get().admitted == 7
    settings.RATELIMIT_TIERS_CACHE = "default"  # Back up: the next run rolls up the other hour.
    assert hours[1] in rollup.roll_up().rolled
    rows = DailyUsage.objects.all()
    assert sum(row.admitted for row in rows) == 14
    assert sum(row.refused_by["all-day"] for row in rows) == 2


@pytest.mark.redis
def test_hours_the_store_no_longer_keeps_are_reported_lost(redis_cache, account, settings):
    settings.RATELIMIT_TIERS_LEDGER_DAYS = 1
    now = time.time()
    RolledHour.objects.create(hour=usage.hour_start(int(now // HOUR) - 40))  # A run, long ago.
    done = rollup.roll_up(now=now)
    first_kept = int((now + 60 - 86400) // HOUR)
    assert done.lost == list(range(int(now // HOUR) - 39, first_kept))
    out, err = io.StringIO(), io.StringIO()
    at = datetime.fromtimestamp(now, tz=timezone.utc).isoformat()
    call_command("ratelimit_tiers_rollup", "--now", at, stdout=out, stderr=err)
    assert "were never rolled up" in err.getvalue()
    assert "Rolled up 0 hours" in out.getvalue()


def test_daily_sees_a_rollup_that_commits_while_it_reads_once(backend, key, account, monkeypatch):
    assert hits(key, 5) == [True] * 3 + [False] * 2
    today = datetime.now(timezone.utc).date()
    expected = totals(usage.daily(today, today))
    assert expected == {(today, key.prefix, "read"): (3, 2)}
    read = usage.read

    def read_while_a_rollup_commits(accounts, hours):
        found = read(accounts, hours)
        if hours and not RolledHour.objects.exists():  # Between the store's hours and the rows.
            assert rollup.roll_hour(this_hour(), usage.accounts_of())
        return found

    monkeypatch.setattr(usage, "read", read_while_a_rollup_commits)
    assert totals(usage.daily(today, today)) == expected
    assert DailyUsage.objects.get().admitted == 3
