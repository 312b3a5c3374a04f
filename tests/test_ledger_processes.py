"""The usage ledger on real processes: gunicorn workers count, rollups run at once on one database.

The acceptance test of issue 14: 8 client processes send 2,000 requests at keys
of two accounts through gunicorn, many over the limit (so workers serve 429s
from memory); after the rollup the billing CSV says exactly what the clients
saw, and rolling up again, twice at once, changes nothing. With
``RATELIMIT_TIERS_TEST_DB=postgres`` the project's database is PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
from redis import Redis

from ratelimit_tiers.ledger import HOUR
from ratelimit_tiers.names import account_tag, ledger_field, ledger_key
from ratelimit_tiers.rollup import GRACE_SECONDS
from tests.conftest import RedisServer
from tests.processes import ROOT, ProjectServer

pytestmark = pytest.mark.redis

#: The project on its own Redis, with timeouts a loaded machine never reaches: a request that failed
#: open would be admitted without being counted, which is the documented outage case, not this test's.
SETTINGS = """
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": %r,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5},
    }
}
DEBUG = False
"""

#: Accounts with an own rule per minute for each of their keys: JSON ``{name: [account id, [raw keys]]}``.
CREATE = """
import json
from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
out = {}
for name, limit, keys in json.loads(%r):
    account = Account.objects.create(name=name, tier=Tier.objects.get(name="Free"))
    LimitRule.objects.create(account=account, count=limit, window_seconds=60)
    raw = [APIKey.objects.create_key(account=account, name=f"k{i}")[1] for i in range(keys)]
    out[name] = [account.pk, raw]
print(json.dumps(out))
"""

#: One client process: ``count`` GETs, round robin over the keys; prints its statuses per key prefix.
CLIENT = """
import collections, http.client, json, sys
port, keys, count = int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
seen = collections.Counter()
for i in range(count):
    key = keys[i % len(keys)]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/api/items/", headers={"Authorization": f"Api-Key {key}"})
        response = connection.getresponse()
        response.read()
        seen[f"{key.split('.')[0]} {response.status}"] += 1
    except OSError:
        seen[f"{key.split('.')[0]} 0"] += 1
    finally:
        connection.close()
print(json.dumps(seen))
"""

CLIENTS = 8
REQUESTS = 2000


@pytest.fixture
def store(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def project(tmp_path, store):
    server = ProjectServer(tmp_path, SETTINGS % store.url, workers=3)
    yield server
    server.stop()


def create(project, *specs):
    output = project.manage("shell", "-c", CREATE % json.dumps(specs))
    return json.loads(output.strip().splitlines()[-1])


def at_once(project, *commands):
    """Run manage.py commands at the same moment, each in its own process; their outputs."""
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        outputs.append(out)
    return outputs


def rollups_at_once(project, count, now):
    outputs = at_once(project, *[["ratelimit_tiers_rollup", "-v2", "--now", now] for _ in range(count)])
    return [line for out in outputs for line in out.splitlines() if line.endswith(": rolled up")]


def csv_totals(project):
    rows = list(csv.reader(io.StringIO(project.manage("ratelimit_tiers_usage", "--csv", "--days", "2"))))
    assert rows[0] == ["date", "account", "key_prefix", "category", "admitted", "refused"]
    totals: Counter[str] = Counter()
    for _day, _account, prefix, _category, admitted, refused in rows[1:]:
        totals[f"{prefix} 200"] += int(admitted)
        totals[f"{prefix} 429"] += int(refused)
    return +totals, rows


def after_this_hour():
    """A moment when this hour (and the next, should the test cross into it) is over, grace included."""
    end = (int(time.time() // HOUR) + 2) * HOUR + GRACE_SECONDS + 1
    return datetime.fromtimestamp(end, tz=timezone.utc).isoformat()


def test_the_csv_after_a_rollup_is_what_the_clients_saw(project, store):
    accounts = create(project, ["alpha", 150, 2], ["beta", 100, 2])
    keys = [key for _pk, raw in accounts.values() for key in raw]
    project.start()
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(project.port), json.dumps(keys), str(REQUESTS // CLIENTS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(CLIENTS)
    ]
    seen: Counter[str] = Counter()
    for client in clients:
        out, _ = client.communicate(timeout=600)
        seen.update(json.loads(out))
    assert sum(seen.values()) == REQUESTS
    assert {status.split()[1] for status in seen} == {"200", "429"}, seen
    assert sum(n for status, n in seen.items() if status.endswith("429")) > REQUESTS / 2  # Over the limits.
    with Redis.from_url(store.url) as client:  # Many 429s were served without a store call.
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] < REQUESTS * 0.9
    project.stop()  # Each worker adds the refusals it served from memory as it exits.
    before, _rows = csv_totals(project)  # Nothing rolled up yet: read from the store.
    assert before == seen
    rolled = rollups_at_once(project, 2, after_this_hour())
    assert len(rolled) == len(set(rolled)) >= 1  # Each hour rolled up once, by one of the two.
    after, rows = csv_totals(project)
    assert after == seen
    assert rollups_at_once(project, 2, after_this_hour()) == []  # Again, twice at once: nothing changes.
    assert csv_totals(project)[1] == rows


def test_rollups_at_once_add_each_hour_once(project, store):
    accounts = create(project, ["alpha", 10, 1], ["beta", 10, 1])
    client = Redis.from_url(store.url)
    hour = int(time.time() // HOUR)
    expected: Counter[tuple[str, str]] = Counter()
    for name, (pk, raw) in accounts.items():
        prefix = raw[0].split(".")[0]
        for back in range(1, 31):  # The last 30 finished hours, as the script counted them.
            key = f":1:{ledger_key(account_tag(pk))}:{hour - back}"
            field = ledger_field(prefix, "read")
            client.hincrby(key, field + "a", back)
            client.hincrby(key, field + "r:all-60s", 1)
            client.expire(key, 86400 * 8)
            day = datetime.fromtimestamp((hour - back) * HOUR, tz=timezone.utc).date().isoformat()
            expected[(day, f"{name} {prefix} admitted")] += back
            expected[(day, f"{name} {prefix} refused")] += 1
    now = datetime.now(timezone.utc).isoformat()
    rolled = rollups_at_once(project, 3, now)
    assert len(rolled) == len(set(rolled)) >= 30
    rows = list(csv.reader(io.StringIO(project.manage("ratelimit_tiers_usage", "--csv", "--days", "3"))))
    found: Counter[tuple[str, str]] = Counter()
    for day, account, prefix, _category, admitted, refused in rows[1:]:
        found[(day, f"{account} {prefix} admitted")] += int(admitted)
        found[(day, f"{account} {prefix} refused")] += int(refused)
    assert found == expected
    assert rollups_at_once(project, 3, now) == []
