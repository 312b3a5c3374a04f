"""The usage ledger's rolled-up rows: requests per key, category and UTC day, and the hours already added."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ratelimit_tiers", "0005_limit_rules"),
    ]

    operations = [
        migrations.CreateModel(
            name="RolledHour",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField(unique=True, verbose_name="hour (UTC)")),
                ("rolled_at", models.DateTimeField(auto_now_add=True, verbose_name="rolled up at")),
            ],
            options={
                "verbose_name": "rolled-up hour",
                "verbose_name_plural": "rolled-up hours",
                "ordering": ["-hour"],
            },
        ),
        migrations.CreateModel(
            name="DailyUsage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField(verbose_name="day (UTC)")),
                ("account_name", models.CharField(max_length=200, verbose_name="account name")),
                ("key_prefix", models.CharField(max_length=12, verbose_name="key prefix")),
                ("category", models.CharField(max_length=50, verbose_name="category")),
                ("admitted", models.PositiveBigIntegerField(default=0, verbose_name="admitted")),
                ("refused", models.PositiveBigIntegerField(default=0, verbose_name="refused")),
                ("refused_by", models.JSONField(blank=True, default=dict, verbose_name="refused by rule")),
                ("last_refused", models.DateTimeField(blank=True, null=True, verbose_name="last refused")),
                (
                    "account",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="daily_usage",
                        to="ratelimit_tiers.account",
                        verbose_name="account",
                    ),
                ),
                (
                    "key",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="daily_usage",
                        to="ratelimit_tiers.apikey",
                        verbose_name="API key",
                    ),
                ),
            ],
            options={
                "verbose_name": "daily usage",
                "verbose_name_plural": "daily usage",
                "ordering": ["-day", "account_name", "key_prefix", "category"],
                "indexes": [models.Index(fields=["account", "day"], name="rlt_daily_usage_account")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "key_prefix", "category"), name="rlt_daily_usage_unique"
                    )
                ],
            },
        ),
    ]
