from __future__ import annotations

from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from ratelimit_tiers import view_throttles
from ratelimit_tiers.throttling import TierRateThrottle


def view(*throttles, **attributes):
    return type("View", (APIView,), {"throttle_classes": list(throttles), **attributes})()


def test_facts_of_a_views_throttle_classes():
    assert view_throttles.of(view(TierRateThrottle))[1:] == (True, True, TierRateThrottle)
    assert view_throttles.of(view(TierRateThrottle, UserRateThrottle))[1:] == (True, True, None)
    assert view_throttles.of(view(UserRateThrottle))[1:] == (True, False, UserRateThrottle)
    assert view_throttles.of(view())[1:] == (True, False, None)
    picks = view(TierRateThrottle, get_throttles=lambda self: [])
    assert not view_throttles.of(picks).fixed  # Its classes say nothing: ask the view.


def test_facts_are_kept_per_view_class_and_bounded(monkeypatch):
    monkeypatch.setattr(view_throttles, "_known", {})
    one = view(TierRateThrottle)
    assert view_throttles.of(one) is view_throttles.of(type(one)())
    for _ in range(view_throttles.MAX_VIEWS + 10):
        view_throttles.of(view(TierRateThrottle))
    assert len(view_throttles._known) <= view_throttles.MAX_VIEWS
