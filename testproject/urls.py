from __future__ import annotations

import importlib.util

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from ratelimit_tiers.views import RateLimitStatusView
from testproject.views import ItemExportView, ItemSearchView, ItemViewSet, UnthrottledWhoAmIView, WhoAmIView

router = DefaultRouter(trailing_slash=True)
router.register("items", ItemViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before the router's URLs, whose item detail route would take "search" and "export" for ids.
    path("api/items/search/", ItemSearchView.as_view(), name="item-search"),
    path("api/items/export/", ItemExportView.as_view(), name="item-export"),
    path("api/", include(router.urls)),
    path("api/ratelimit/", RateLimitStatusView.as_view(), name="ratelimit-status"),
    path("api/whoami/", WhoAmIView.as_view(), name="whoami"),
    path("api/whoami/unthrottled/", UnthrottledWhoAmIView.as_view(), name="whoami-unthrottled"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

if importlib.util.find_spec("prometheus_client") is not None:
    # The usage ledger's Prometheus metrics (ratelimit_tiers.metrics), when prometheus_client is installed.
    from testproject.metrics import metrics

    urlpatterns.append(path("metrics", metrics, name="metrics"))
