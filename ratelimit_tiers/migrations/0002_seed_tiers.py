from __future__ import annotations

from typing import Any

from django.db import migrations

# The published plans: requests per minute.
TIERS = [
    ("Free", 60, "Default tier for new accounts"),
    ("Basic", 300, "For small-scale applications"),
    ("Pro", 1000, "For production applications"),
    ("Enterprise", 5000, "For high-volume applications"),
]


def seed(apps: Any, schema_editor: Any) -> None:
    Tier = apps.get_model("ratelimit_tiers", "Tier")
    for name, limit, description in TIERS:
        Tier.objects.get_or_create(
            name=name, defaults={"limit": limit, "window_seconds": 60, "description": description}
        )


def unseed(apps: Any, schema_editor: Any) -> None:
    Tier = apps.get_model("ratelimit_tiers", "Tier")
    Tier.objects.filter(name__in=[name for name, _, _ in TIERS], accounts__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("ratelimit_tiers", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
