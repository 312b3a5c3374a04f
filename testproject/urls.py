from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from testproject.views import ItemViewSet, UnthrottledWhoAmIView, WhoAmIView

router = DefaultRouter(trailing_slash=True)
router.register("items", ItemViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("api/whoami/", WhoAmIView.as_view(), name="whoami"),
    path("api/whoami/unthrottled/", UnthrottledWhoAmIView.as_view(), name="whoami-unthrottled"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]
