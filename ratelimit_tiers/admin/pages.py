"""The app's own admin pages beside a model's: each URL behind ``admin_site.admin_view`` (staff only,
anonymous users sent to log in), the view given the model's admin to check permissions with."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin
from django.http import HttpRequest, HttpResponseBase
from django.urls import URLPattern, path

PageView = Callable[[admin.ModelAdmin, HttpRequest], HttpResponseBase]


def page_url(model_admin: admin.ModelAdmin, route: str, view: PageView, name: str) -> URLPattern:
    """``route`` under the model's admin URLs; put it before the defaults, whose ``<object_id>/``
    would take it."""

    def bound(request: HttpRequest) -> HttpResponseBase:
        return view(model_admin, request)

    return path(route, model_admin.admin_site.admin_view(bound), name=name)
