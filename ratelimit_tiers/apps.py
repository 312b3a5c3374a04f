"""The app's configuration: connects the receivers and registers the system checks once models load."""

from __future__ import annotations

import importlib.util

from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


class RatelimitTiersConfig(AppConfig):
    name = "ratelimit_tiers"
    verbose_name = _("Rate limit tiers")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, once the app registry is ready: Django imports this module while it
        # populates the registry, before models can be imported (invalidation imports them).
        from ratelimit_tiers import checks as rlt_checks
        from ratelimit_tiers import invalidation  # noqa: F401 - connects the receivers.

        checks.register(rlt_checks.check_settings)
        checks.register(rlt_checks.check_cache, checks.Tags.caches)
        checks.register(rlt_checks.check_middleware)
        checks.register(rlt_checks.check_surface_settings)
        checks.register(rlt_checks.check_views, checks.Tags.urls)
        checks.register(rlt_checks.check_eviction, checks.Tags.caches, deploy=True)
        if importlib.util.find_spec("drf_spectacular") is not None:
            # drf-spectacular is optional: imported only when it is installed.
            from ratelimit_tiers import openapi  # noqa: F401 - registers the schema extension.
        if importlib.util.find_spec("prometheus_client") is not None:
            # prometheus_client is optional: the ledger's metrics exist only when it is installed.
            from ratelimit_tiers import metrics

            metrics.register()
