from __future__ import annotations

from django.utils import translation

from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.exceptions import RateLimited

REFUSAL = Decision(False, 5, 60, 0, 12.5, 1_700_000_000.0, "read-60s")


def translated_while(monkeypatch, build):
    """The messages ``build()`` asks Django to translate, and what it built."""
    asked: list[str] = []
    translation.gettext("warm")  # Django resolves its translation functions on first use.
    real = translation._trans.gettext

    def counting(message):
        asked.append(str(message))
        return real(message)

    monkeypatch.setattr(translation._trans, "gettext", counting)
    return asked, build()


def test_a_refusal_translates_its_own_detail_and_nothing_else(monkeypatch):
    # Issue 15: DRF's default "Request was throttled." was translated and wrapped on every 429 (a
    # tenth of a locally served refusal's cost), then replaced by this body.
    asked, exc = translated_while(monkeypatch, lambda: RateLimited(REFUSAL, 30.2))
    assert asked == ["Rate limit exceeded: %(limit)d requests per %(window)d seconds."]
    assert exc.detail == {
        "code": "rate_limited",
        "detail": "Rate limit exceeded: 5 requests per 60 seconds.",
        "limit": 5,
        "window": 60,
        "retry_after": 31,
        "reset": 1_700_000_013,
        "policy": "read-60s",
    }
    assert exc.wait == 31
    assert exc.status_code == 429


def test_a_quota_refusal_says_quota_exceeded(monkeypatch):
    quota = REFUSAL._replace(policy="all-day", window=86400, quota=True)
    asked, exc = translated_while(monkeypatch, lambda: RateLimited(quota))
    assert asked == ["Quota exceeded: %(limit)d requests per period of %(window)d seconds."]
    assert exc.detail["code"] == "quota_exceeded"
    assert exc.detail["detail"] == "Quota exceeded: 5 requests per period of 86400 seconds."
    assert exc.wait == 13
