"""Settings, read lazily from ``django.conf.settings`` and cached until they change."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

PREFIX = "RATELIMIT_TIERS_"


class Settings:
    """Each property reads ``RATELIMIT_TIERS_<NAME>`` with its default.

    Values are cached on first read (the throttle reads several per request,
    and a missing setting costs Django an exception each time) and dropped on
    ``setting_changed``, which ``override_settings`` and pytest-django's
    ``settings`` fixture send: the pattern of DRF's ``api_settings``.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, default: Any) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = getattr(settings, PREFIX + name, default)
            return value

    def reload(self) -> None:
        """Forget cached values: the next read sees the current settings."""
        self._cache.clear()

    @property
    def CACHE(self) -> str:
        """Alias in ``CACHES`` that holds counters and resolved policies."""
        return self._get("CACHE", "default")  # type: ignore[no-any-return]

    @property
    def STORAGE(self) -> str | None:
        """Dotted path of a ``Storage`` class; ``None`` picks one from the cache backend."""
        return self._get("STORAGE", None)  # type: ignore[no-any-return]

    @property
    def ALGORITHM(self) -> str:
        """``"exact"`` or ``"counter"``: used by tiers that do not choose one."""
        return self._get("ALGORITHM", "exact")  # type: ignore[no-any-return]

    @property
    def KEY_HEADER(self) -> str:
        """HTTP header that carries the API key."""
        return self._get("KEY_HEADER", "Authorization")  # type: ignore[no-any-return]

    @property
    def KEY_KEYWORD(self) -> str:
        """Scheme word before the key in ``KEY_HEADER``; ``""`` for a bare key."""
        return self._get("KEY_KEYWORD", "Api-Key")  # type: ignore[no-any-return]

    @property
    def FAIL_OPEN(self) -> bool:
        """Admit requests when the store is unreachable (``False``: answer 503)."""
        return self._get("FAIL_OPEN", True)  # type: ignore[no-any-return]

    @property
    def POLICY_TIMEOUT(self) -> int:
        """Seconds a resolved key policy lives in the store (saves also evict it)."""
        return self._get("POLICY_TIMEOUT", 300)  # type: ignore[no-any-return]

    @property
    def IETF_HEADERS(self) -> bool:
        """Also send the IETF draft's ``RateLimit-Policy`` and ``RateLimit`` fields."""
        return self._get("IETF_HEADERS", False)  # type: ignore[no-any-return]

    @property
    def ROTATION_GRACE(self) -> int:
        """Seconds a rotated key keeps working beside its replacement."""
        return self._get("ROTATION_GRACE", 86400)  # type: ignore[no-any-return]

    @property
    def SHADOW(self) -> bool:
        """Shadow mode for every tier: count and send headers, but never refuse."""
        return self._get("SHADOW", False)  # type: ignore[no-any-return]

    @property
    def QUOTA_WARNING_RATIO(self) -> float:
        """Send ``quota_low`` when ``remaining`` drops to this fraction of the limit or below."""
        return self._get("QUOTA_WARNING_RATIO", 0.1)  # type: ignore[no-any-return]

    @property
    def BREAKER_FAILURES(self) -> int:
        """Consecutive store failures that open the circuit breaker; ``0`` disables it."""
        return self._get("BREAKER_FAILURES", 3)  # type: ignore[no-any-return]

    @property
    def BREAKER_COOLDOWN(self) -> float:
        """Seconds an open breaker skips the store before one probe may try it again."""
        return self._get("BREAKER_COOLDOWN", 2)  # type: ignore[no-any-return]

    @property
    def INVALID_KEY_RATE(self) -> str | None:
        """Rate (e.g. ``"60/min"``) of bad-key requests per client IP before 429; ``None``: no limit."""
        return self._get("INVALID_KEY_RATE", "60/min")  # type: ignore[no-any-return]

    @property
    def LOCAL_REFUSAL_SECONDS(self) -> float:
        """Seconds a process serves the store's refusal of a key (or client network) itself; ``0``: never."""
        return self._get("LOCAL_REFUSAL_SECONDS", 1)  # type: ignore[no-any-return]

    @property
    def TRUSTED_PROXIES(self) -> int:
        """Number of proxies in front of the app whose ``X-Forwarded-For`` entries are trusted."""
        return self._get("TRUSTED_PROXIES", 0)  # type: ignore[no-any-return]

    @property
    def QUOTA_TIMEZONE(self) -> str:
        """IANA time zone whose midnights start calendar quotas' days, weeks (Mondays) and months."""
        return self._get("QUOTA_TIMEZONE", "UTC")  # type: ignore[no-any-return]

    @property
    def STATUS_RATE(self) -> str | None:
        """Rate (e.g. ``"60/min"``) of a key's requests to the status view before 429; ``None``: no limit."""
        return self._get("STATUS_RATE", "60/min")  # type: ignore[no-any-return]

    @property
    def LEDGER_DAYS(self) -> int:
        """Days the store keeps the usage ledger's hourly counts (roll them up sooner); ``0``: no ledger."""
        return self._get("LEDGER_DAYS", 7)  # type: ignore[no-any-return]

    @property
    def REDIS_CLUSTER(self) -> str | dict[str, Any] | None:
        """URL of a cluster node, or ``RedisCluster`` keyword arguments, for ``RedisClusterStorage``."""
        return self._get("REDIS_CLUSTER", None)  # type: ignore[no-any-return]


conf = Settings()


@receiver(setting_changed, dispatch_uid="rlt_conf_setting_changed")
def _reload(setting: str, **kwargs: Any) -> None:
    if setting.startswith(PREFIX):
        conf.reload()
