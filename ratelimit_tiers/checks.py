"""System checks: a misconfiguration fails at startup, not on the first request.

IDs are stable and never reused.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import DatabaseError
from django.utils.module_loading import import_string

from ratelimit_tiers.algorithms import ALGORITHMS, parse_rate
from ratelimit_tiers.categories import ThrottledView, throttled_views
from ratelimit_tiers.conf import conf
from ratelimit_tiers.models import LimitRule
from ratelimit_tiers.rules import CATEGORY_RE, Rule, applicable
from ratelimit_tiers.storage import Storage
from ratelimit_tiers.storage.backends import redis_client

MIDDLEWARE_PATH = "ratelimit_tiers.middleware.RateLimitHeadersMiddleware"
CLUSTER_STORAGE_PATH = "ratelimit_tiers.storage.cluster.RedisClusterStorage"
REDIS_CACHE = "django_redis.cache.RedisCache"
BUILTIN_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
# The socket timeouts each Redis backend takes in its OPTIONS: django-redis's
# names, and redis-py's for Django's own backend (it passes OPTIONS to the pool).
REDIS_TIMEOUTS: dict[str, tuple[str, ...]] = {
    REDIS_CACHE: ("SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT"),
    BUILTIN_REDIS_CACHE: ("socket_connect_timeout", "socket_timeout"),
}
REDIS_STORAGE_PATH = "ratelimit_tiers.storage.redis.RedisStorage"

# Backends that cannot count at all, and ones that count per process or racily.
BROKEN_CACHES = {
    "django.core.cache.backends.dummy.DummyCache": "it stores nothing, so nothing is ever limited",
}
WEAK_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "each process keeps its own counters",
    "django.core.cache.backends.filebased.FileBasedCache": "its incr is not atomic",
    "django.core.cache.backends.db.DatabaseCache": "its incr is not atomic",
}


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []

    def error(id_: int, msg: str, hint: str) -> None:
        errors.append(Error(msg, hint=hint, id=f"ratelimit_tiers.E{id_:03d}"))

    if not isinstance(conf.CACHE, str):
        error(1, "RATELIMIT_TIERS_CACHE must be a string.", "Name an alias from CACHES.")
    elif conf.CACHE not in settings.CACHES:
        error(2, f"RATELIMIT_TIERS_CACHE {conf.CACHE!r} is not in CACHES.", "Add it to CACHES.")
    if not isinstance(conf.FAIL_OPEN, bool):
        error(3, "RATELIMIT_TIERS_FAIL_OPEN must be a bool.", "Use True or False.")
    if conf.ALGORITHM not in ALGORITHMS:
        error(4, f"RATELIMIT_TIERS_ALGORITHM must be one of {ALGORITHMS}.", 'Use "exact".')
    if not isinstance(conf.KEY_HEADER, str) or not conf.KEY_HEADER:
        error(5, "RATELIMIT_TIERS_KEY_HEADER must be a non-empty string.", 'Use "Authorization".')
    if not isinstance(conf.KEY_KEYWORD, str):
        error(6, "RATELIMIT_TIERS_KEY_KEYWORD must be a string.", 'Use "Api-Key", or "" for a bare key.')
    timeout = conf.POLICY_TIMEOUT
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        error(7, "RATELIMIT_TIERS_POLICY_TIMEOUT must be a positive integer.", "Seconds, e.g. 300.")
    if conf.STORAGE is not None:
        try:
            cls = import_string(conf.STORAGE) if isinstance(conf.STORAGE, str) else None
        except ImportError:
            cls = None
        if not (isinstance(cls, type) and issubclass(cls, Storage)):
            error(8, "RATELIMIT_TIERS_STORAGE must be the dotted path of a Storage subclass.", "Or None.")
    errors += _check_resilience_settings()
    if not _is_int(conf.LEDGER_DAYS, 0):
        error(40, "RATELIMIT_TIERS_LEDGER_DAYS must be a non-negative integer.", "E.g. 7; 0: no ledger.")
    return errors


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_rate_or_none(rate: Any) -> bool:
    try:
        return rate is None or (isinstance(rate, str) and parse_rate(rate).limit > 0)
    except ValueError:
        return False


def _is_time_zone(name: Any) -> bool:
    try:
        return isinstance(name, str) and ZoneInfo(name) is not None
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError.
        return False


def _check_resilience_settings() -> list[CheckMessage]:
    errors: list[CheckMessage] = []

    def error(id_: int, msg: str, hint: str) -> None:
        errors.append(Error(msg, hint=hint, id=f"ratelimit_tiers.E{id_:03d}"))

    if not _is_int(conf.BREAKER_FAILURES, 0):
        error(10, "RATELIMIT_TIERS_BREAKER_FAILURES must be a non-negative integer.", "E.g. 3; 0 disables.")
    cooldown = conf.BREAKER_COOLDOWN
    if not isinstance(cooldown, (int, float)) or isinstance(cooldown, bool) or cooldown <= 0:
        error(11, "RATELIMIT_TIERS_BREAKER_COOLDOWN must be a positive number.", "Seconds, e.g. 5.")
    if not _is_rate_or_none(conf.INVALID_KEY_RATE):
        error(12, "RATELIMIT_TIERS_INVALID_KEY_RATE must be a rate or None.", 'E.g. "60/min".')
    local = conf.LOCAL_REFUSAL_SECONDS
    if not isinstance(local, (int, float)) or isinstance(local, bool) or not 0 <= local < math.inf:
        error(16, "RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS must be a number >= 0.", "E.g. 1; 0 disables.")
    if not _is_int(conf.TRUSTED_PROXIES, 0):
        error(13, "RATELIMIT_TIERS_TRUSTED_PROXIES must be a non-negative integer.", "0 without a proxy.")
    cluster = conf.REDIS_CLUSTER
    if not (cluster is None or isinstance(cluster, (str, dict))):
        error(14, "RATELIMIT_TIERS_REDIS_CLUSTER must be a URL, a dict or None.", 'E.g. "redis://node:6379".')
    elif cluster is None and conf.STORAGE == CLUSTER_STORAGE_PATH:
        error(15, "RedisClusterStorage needs RATELIMIT_TIERS_REDIS_CLUSTER.", 'E.g. "redis://node:6379".')
    return errors


def check_cache(**kwargs: Any) -> list[CheckMessage]:
    alias = conf.CACHE
    if not isinstance(alias, str) or alias not in settings.CACHES:
        return []  # Reported by check_settings.
    backend = str(settings.CACHES[alias].get("BACKEND", ""))
    if backend in BROKEN_CACHES:
        return [
            Error(
                f"The rate-limit cache {alias!r} uses {backend}: {BROKEN_CACHES[backend]}.",
                hint="Use a Redis cache, django-redis's or Django's own (or LocMem for development).",
                id="ratelimit_tiers.E009",
            )
        ]
    if backend in WEAK_CACHES:
        return [
            Warning(
                f"The rate-limit cache {alias!r} uses {backend}: {WEAK_CACHES[backend]}, "
                "so limits hold only within one process.",
                hint="Use a Redis cache (django-redis's or Django's own) in production.",
                id="ratelimit_tiers.W001",
            )
        ]
    names = REDIS_TIMEOUTS.get(backend, ())
    options: Any = settings.CACHES[alias].get("OPTIONS") or {}
    unbounded = [name for name in names if options.get(name) is None]
    if unbounded and conf.STORAGE != CLUSTER_STORAGE_PATH:
        return [
            Warning(
                f"The rate-limit cache {alias!r} sets no {' or '.join(unbounded)}: "
                "a Redis that stops answering stalls requests without bound.",
                hint=f'Add e.g. "{names[0]}": 0.1, "{names[1]}": 0.1 to its OPTIONS.',
                id="ratelimit_tiers.W003",
            )
        ]
    return []


def check_middleware(**kwargs: Any) -> list[CheckMessage]:
    if MIDDLEWARE_PATH not in getattr(settings, "MIDDLEWARE", []):
        return [
            Warning(
                "RateLimitHeadersMiddleware is not in MIDDLEWARE: responses carry no X-RateLimit-* headers.",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE.",
                id="ratelimit_tiers.W002",
            )
        ]
    return []


def check_surface_settings(**kwargs: Any) -> list[CheckMessage]:
    """Settings of the client-facing surface: headers, rotation, shadow mode, signals."""
    errors: list[CheckMessage] = []
    if not isinstance(conf.IETF_HEADERS, bool):
        errors.append(
            Error(
                "RATELIMIT_TIERS_IETF_HEADERS must be a bool.",
                hint="Use True or False.",
                id="ratelimit_tiers.E020",
            )
        )
    grace = conf.ROTATION_GRACE
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        errors.append(
            Error(
                "RATELIMIT_TIERS_ROTATION_GRACE must be a non-negative integer.",
                hint="Seconds a rotated key keeps working, e.g. 86400.",
                id="ratelimit_tiers.E021",
            )
        )
    if not isinstance(conf.SHADOW, bool):
        errors.append(
            Error(
                "RATELIMIT_TIERS_SHADOW must be a bool.", hint="Use True or False.", id="ratelimit_tiers.E022"
            )
        )
    ratio = conf.QUOTA_WARNING_RATIO
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        errors.append(
            Error(
                "RATELIMIT_TIERS_QUOTA_WARNING_RATIO must be a number from 0 to 1.",
                hint="E.g. 0.1: quota_low fires when 10% or less of the limit remains.",
                id="ratelimit_tiers.E023",
            )
        )
    if not _is_time_zone(conf.QUOTA_TIMEZONE):
        errors.append(
            Error(
                f"RATELIMIT_TIERS_QUOTA_TIMEZONE {conf.QUOTA_TIMEZONE!r} is not a known time zone.",
                hint='An IANA name, e.g. "UTC" or "Europe/Paris" (install tzdata where the OS has none).',
                id="ratelimit_tiers.E024",
            )
        )
    if not _is_rate_or_none(conf.STATUS_RATE):
        errors.append(
            Error(
                "RATELIMIT_TIERS_STATUS_RATE must be a rate or None.",
                hint='E.g. "60/min": requests of one key to the status view.',
                id="ratelimit_tiers.E025",
            )
        )
    if conf.SHADOW is True:
        errors.append(
            Warning(
                "RATELIMIT_TIERS_SHADOW is on: no request is ever refused for its rate.",
                hint="Use it to try limits; turn it off to enforce them.",
                id="ratelimit_tiers.W020",
            )
        )
    return errors


def check_eviction(**kwargs: Any) -> list[CheckMessage]:
    """A deploy check (``check --deploy``), as it asks the limiter's Redis for its ``maxmemory-policy``.

    Connects with a short timeout; says nothing when Redis is down or will not tell.
    """
    alias = conf.CACHE
    if not isinstance(alias, str) or alias not in settings.CACHES:
        return []
    if settings.CACHES[alias].get("BACKEND") not in REDIS_TIMEOUTS or conf.STORAGE not in (
        None,
        REDIS_STORAGE_PATH,
    ):
        return []  # Only the Redis caches' clients (plain, Sentinel): a cluster's nodes are not asked.
    # Imported here, not at the top: redis-py is an optional extra, needed only with a Redis cache.
    from ratelimit_tiers.storage.eviction import EVICTING_HINT, SAFE_POLICY, evicting_message, eviction_policy

    policy = eviction_policy(redis_client(alias))
    if policy is None or policy == SAFE_POLICY:
        return []
    return [Warning(evicting_message(alias, policy), hint=EVICTING_HINT, id="ratelimit_tiers.W005")]


def check_views(**kwargs: Any) -> list[CheckMessage]:
    """Views throttled by ``TierRateThrottle``: their ``ratelimit_category`` and ``ratelimit_cost``
    against the names a rule can have and the tiers' rules (read from the database, when it answers)."""
    messages: dict[str, CheckMessage] = {}  # By text: a view routed twice is one problem.
    views = throttled_views()
    for view in views:
        category = view.category
        if category and not (isinstance(category, str) and CATEGORY_RE.match(category)):
            error = Error(
                f"{view.name}.ratelimit_category {category!r} is not a category name.",
                hint="Lowercase letters, digits, '.', '_' or '-' (at most 50), e.g. \"search\".",
                id="ratelimit_tiers.E030",
            )
            messages[error.msg] = error
        cost = static_cost(view)
        if cost is not PER_REQUEST and (type(cost) is not int or cost < 1):
            error = Error(
                f"{view.name}.ratelimit_cost {cost!r} is not a whole number of at least 1.",
                hint="The number of requests one request counts as, e.g. 10.",
                id="ratelimit_tiers.E031",
            )
            messages[error.msg] = error
    try:
        rows = list(LimitRule.objects.select_related("tier"))
    except DatabaseError:
        return list(messages.values())  # Not migrated yet, or no database: checked once it is.
    for message in _check_costs(views, rows) + _check_unnamed_categories(views, rows):
        messages[message.msg] = message
    return list(messages.values())


#: What :func:`static_cost` answers for a view that computes its cost per request.
PER_REQUEST = object()


def static_cost(view: ThrottledView) -> Any:
    """Its ``ratelimit_cost`` (default 1), or :data:`PER_REQUEST` when it has ``get_ratelimit_cost``."""
    if view.attribute("get_ratelimit_cost") is not None:
        return PER_REQUEST
    return view.attribute("ratelimit_cost", 1)


def _check_costs(views: list[ThrottledView], rows: list[LimitRule]) -> list[CheckMessage]:
    """A static cost more than the count of a rule its requests meet in some tier: always a 403."""
    tiers: dict[str, list[Rule]] = defaultdict(list)
    for row in rows:
        if row.tier is not None:
            tiers[row.tier.name].append(row.as_rule())
    messages: list[CheckMessage] = []
    for view in views:
        cost = static_cost(view)
        if type(cost) is not int:
            continue
        too_small = sorted(
            f"{tier} {rule.name} ({rule.rate})"
            for tier, rules in tiers.items()
            for category in view.categories
            for rule in applicable(rules, category)
            if rule.count < cost
        )
        if too_small:
            messages.append(
                Error(
                    f"{view.name}.ratelimit_cost {cost} is more than rules admit in a whole period: "
                    f"{', '.join(too_small)}. Such requests would always get 403.",
                    hint="Lower the cost, or raise those rules' counts.",
                    id="ratelimit_tiers.E032",
                )
            )
    return messages


def _check_unnamed_categories(views: list[ThrottledView], rows: list[LimitRule]) -> list[CheckMessage]:
    named = {row.category for row in rows}
    unnamed: dict[str, list[str]] = defaultdict(list)
    for view in views:
        category = view.category
        valid = isinstance(category, str) and CATEGORY_RE.match(category)
        if valid and category not in named and view.name not in unnamed[category]:
            unnamed[category].append(view.name)
    if not unnamed:
        return []
    listed = "; ".join(f"{category!r}: {', '.join(names)}" for category, names in sorted(unnamed.items()))
    return [
        Warning(
            f"No limit rule names the category of these views ({listed}): each tier's all-categories "
            "rules apply to it, counted apart from the other categories.",
            hint="Give the tiers a rule for it (ratelimit_tiers_limits set TIER RATE --category C), "
            "or silence this warning if their all-categories rules are meant.",
            id="ratelimit_tiers.W030",
        )
    ]
