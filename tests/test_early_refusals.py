"""Early refusals (``RATELIMIT_TIERS_EARLY_REFUSALS``) on real gunicorn workers and a real redis-server.

Two servers share one database and one Redis: one with early refusals on,
one without. A receiver of ``request_throttled`` (in the servers' URLconf)
prints, for each signal, whether DRF's view code is on the stack, so the
tests can tell which path answered a 429 that is meant to look the same.
"""

from __future__ import annotations

import http.client
import time

import pytest
import redis as redis_py

from tests.conftest import RedisServer
from tests.processes import FAIL_OPEN_SETTINGS, ProjectServer

pytestmark = pytest.mark.redis

URLS = """
import sys

from django.urls import include, path

from ratelimit_tiers.signals import request_throttled
from testproject.views import WhoAmIView


class DynamicCostView(WhoAmIView):
    def get_ratelimit_cost(self, request):
        return 1


def report(sender, request, **kwargs):
    frame, drf = sys._getframe(), False
    while frame is not None:
        drf = drf or frame.f_code.co_filename.endswith("rest_framework/views.py")
        frame = frame.f_back
    print(f"SIGNAL path={request.path} drf={drf}", file=sys.stderr, flush=True)


request_throttled.connect(report)

urlpatterns = [path("dynamic/", DynamicCostView.as_view()), path("", include("testproject.urls"))]
"""

SETTINGS = FAIL_OPEN_SETTINGS + (
    'ROOT_URLCONF = "early_urls"\nRATELIMIT_TIERS_IETF_HEADERS = True\n'
    # Django's own warning for each 4xx, which its handler logs whoever answered.
    'LOGGING["loggers"]["django.request"] = {"handlers": ["console"], "level": "WARNING"}\n'
)


@pytest.fixture
def servers(tmp_path, request):
    kind = getattr(request, "param", "sync")
    redis = RedisServer(tmp_path)
    for name in ("early", "drf"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "early_urls.py").write_text(URLS)
    on = SETTINGS % redis.url + "RATELIMIT_TIERS_EARLY_REFUSALS = True\n"
    early = ProjectServer(tmp_path / "early", on, workers=1, kind=kind)
    drf = ProjectServer(tmp_path / "drf", SETTINGS % redis.url, workers=1, kind=kind)
    # One database: the DRF server's is replaced by the early one's.
    drf.env.update({name: value for name, value in early.env.items() if name.startswith("DJANGO_DB")})
    keys = early.create_keys(("flooded", "Free", 3), ("spare", "Free", 100))
    early.start()
    drf.start()
    try:
        yield early, drf, keys, redis
    finally:
        early.stop()
        drf.stop()
        redis.kill()


def get(server, path, key=None):
    """Status, headers in order (``Date`` left out) and body of a GET."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Api-Key {key}"} if key else {})
        response = connection.getresponse()
        body = response.read()
        headers = [(name, value) for name, value in response.getheaders() if name.lower() != "date"]
        return response.status, headers, body
    finally:
        connection.close()


def log_text(server):
    return (server.directory / "server.log").read_text(errors="replace")


def signals(server):
    return [line.split(" ", 1)[1] for line in log_text(server).splitlines() if line.startswith("SIGNAL ")]


def exhaust(server, path, key, limit=3):
    assert [get(server, path, key)[0] for _ in range(limit + 1)] == [200] * limit + [429]


def same_second(early, drf, path, key):
    """An early 429 and a DRF one; both from notes, within the same second of ``Retry-After``.

    Retry-After and the IETF ``t=`` count down: a DRF answer taken between
    two equal early answers is in the same second as they are.
    """
    for _ in range(10):
        first, theirs, last = get(early, path, key), get(drf, path, key), get(early, path, key)
        if first == last:
            return first, theirs
    raise AssertionError("no two early answers within the same second")


# Under ASGI too: Django runs the middleware's (sync) process_view in a thread, as it does DRF's views.
@pytest.mark.parametrize("servers", ["sync", "uvicorn"], indirect=True)
def test_a_flood_on_an_exhausted_key_gets_the_drf_paths_429_byte_for_byte(servers):
    early, drf, keys, store = servers
    # Cost 1 on 3 a minute, and cost 10 on 100 a minute (ten admitted).
    for path, key, limit in (("/api/whoami/", "flooded", 3), ("/api/items/export/", "spare", 10)):
        exhaust(drf, path, keys[key], limit)
        get(early, path, keys[key])  # The early server's own note: its first 429 is the store's.
        before = (len(signals(early)), len(signals(drf)))
        ours, theirs = same_second(early, drf, path, keys[key])
        assert ours[0] == 429
        assert ours == theirs
        assert dict(ours[1])["Retry-After"] and "RateLimit-Policy" in dict(ours[1])
        assert signals(early)[before[0] :] == [f"path={path} drf=False"] * 2
        assert signals(drf)[before[1] :] == [f"path={path} drf=True"]

    before, started = len(signals(early)), time.monotonic()
    flood = [get(early, "/api/whoami/", keys["flooded"])[0] for _ in range(50)]
    elapsed = time.monotonic() - started
    assert flood == [429] * 50
    sent = signals(early)[before:]
    assert len(sent) == 50  # One signal per 429, ...
    # ... sent early but for the store's answers: one renewal per LOCAL_REFUSAL_SECONDS (1 s).
    assert sent.count("path=/api/whoami/ drf=False") >= 50 - (int(elapsed) + 1)
    log = log_text(early)
    assert log.count("event=throttled") == log.count("SIGNAL ")  # One refusal log line per 429,
    assert log.count("Too Many Requests: /api/whoami/") == log.count("SIGNAL path=/api/whoami/")  # Django's.

    # The usage ledger counts every 429 of both servers, early ones included: those served from memory
    # are carried by the key's next store call or sent by each process's flushing thread, within
    # seconds. (Not waiting for the servers' exit: uvicorn ends by re-raising SIGTERM, without atexit.)
    client = redis_py.Redis.from_url(store.url)
    served = len(signals(early)) + len(signals(drf))
    deadline = time.monotonic() + 15
    while (refused := ledger_refusals(client)) < served and time.monotonic() < deadline:
        time.sleep(0.2)
    assert refused == served


def ledger_refusals(client):
    """The refusals in every ledger hash of the store (Django's cache adds its ``:1:`` to the names)."""
    return sum(
        int(count)
        for ledger in client.scan_iter("*rlt:*:u:*")
        for field, count in client.hgetall(ledger).items()
        if b":r:" in field
    )


def test_bad_keys_dynamic_costs_and_viewsets_go_through_drf(servers):
    early, _drf, keys, _ = servers
    exhaust(early, "/api/whoami/", keys["flooded"])
    prefix = keys["flooded"].split(".")[0]
    wrong = get(early, "/api/whoami/", prefix + "." + "x" * 43)
    assert wrong[0] == 401  # A noted prefix with a wrong secret: DRF's 401, not the note's 429.
    assert get(early, "/api/whoami/", "AAAAAAAAAAAA." + "a" * 43)[0] == 401
    assert get(early, "/api/whoami/")[0] in (401, 403)

    before = len(signals(early))
    assert get(early, "/dynamic/", keys["flooded"])[0] == 429  # get_ratelimit_cost: same note, DRF serves.
    assert get(early, "/api/items/", keys["flooded"])[0] == 429  # A viewset: DRF serves.
    assert get(early, "/api/whoami/", keys["flooded"])[0] == 429
    assert signals(early)[before:] == [
        "path=/dynamic/ drf=True",
        "path=/api/items/ drf=True",
        "path=/api/whoami/ drf=False",
    ]


UPGRADE = """
from ratelimit_tiers.models import LimitRule
rule = LimitRule.objects.get(account__name="flooded")
rule.count = 100
rule.save()
"""


@pytest.mark.parametrize("change", ["reset", "upgrade"])
def test_a_reset_or_upgrade_elsewhere_admits_within_local_refusal_seconds(servers, change):
    early, _drf, keys, _ = servers
    exhaust(early, "/api/whoami/", keys["flooded"])
    assert [get(early, "/api/whoami/", keys["flooded"])[0] for _ in range(20)] == [429] * 20
    if change == "reset":  # In another process, as an operator would.
        early.manage("ratelimit_tiers_reset_key", keys["flooded"].split(".")[0])
    else:
        early.manage("shell", "-c", UPGRADE)
    # Every note this worker holds came from a store answer before the reset: it serves at most 1 s
    # (LOCAL_REFUSAL_SECONDS) after that answer; then the store, which admits.
    time.sleep(1.2)
    assert get(early, "/api/whoami/", keys["flooded"])[0] == 200
