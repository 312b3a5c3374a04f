"""Limits as rows: each tier's limit and per-category limits, and each account's custom limit,
become :class:`~ratelimit_tiers.models.LimitRule` rows that behave exactly as the columns did."""

from __future__ import annotations

from typing import Any

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

CATEGORY_FIELDS = {
    "read": "read_limit",
    "write": "write_limit",
    "delete": "delete_limit",
    "auth": "auth_limit",
}


def columns_to_rules(apps: Any, schema_editor: Any) -> None:
    Tier = apps.get_model("ratelimit_tiers", "Tier")
    Account = apps.get_model("ratelimit_tiers", "Account")
    LimitRule = apps.get_model("ratelimit_tiers", "LimitRule")
    for tier in Tier.objects.all():
        period = {"window_seconds": tier.window_seconds, "algorithm": tier.algorithm}
        LimitRule.objects.create(tier=tier, category="", count=tier.limit, **period)
        for category, field in CATEGORY_FIELDS.items():
            if getattr(tier, field) is not None:
                LimitRule.objects.create(tier=tier, category=category, count=getattr(tier, field), **period)
    for account in Account.objects.exclude(limit_override=None).select_related("tier"):
        # The custom limit replaced the tier's in every category, its own limits included.
        tier = account.tier
        period = {"window_seconds": tier.window_seconds, "algorithm": tier.algorithm}
        categories = [c for c, field in CATEGORY_FIELDS.items() if getattr(tier, field) is not None]
        for category in ["", *categories]:
            LimitRule.objects.create(
                account=account, category=category, count=account.limit_override, **period
            )


def rules_to_columns(apps: Any, schema_editor: Any) -> None:
    Tier = apps.get_model("ratelimit_tiers", "Tier")
    Account = apps.get_model("ratelimit_tiers", "Account")
    LimitRule = apps.get_model("ratelimit_tiers", "LimitRule")
    for tier in Tier.objects.all():
        sliding = LimitRule.objects.filter(tier=tier, scope="key", calendar="").order_by("window_seconds")
        base = sliding.filter(category="").first() or sliding.first()
        tier.limit = base.count if base else 0
        tier.window_seconds = base.window_seconds if base else 60
        tier.algorithm = base.algorithm if base else ""
        for category, field in CATEGORY_FIELDS.items():
            rule = sliding.filter(category=category, window_seconds=tier.window_seconds).first()
            setattr(tier, field, rule.count if rule else None)
        tier.save()
    for account in Account.objects.select_related("tier"):
        rule = LimitRule.objects.filter(
            account=account, category="", scope="key", calendar="", window_seconds=account.tier.window_seconds
        ).first()
        if rule is not None:
            account.limit_override = rule.count
            account.save()


class Migration(migrations.Migration):
    dependencies = [("ratelimit_tiers", "0004_rotate_permission")]

    operations = [
        migrations.CreateModel(
            name="LimitRule",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "category",
                    models.CharField(
                        blank=True,
                        help_text="Empty: each category without a rule of its own for this period and scope.",
                        max_length=50,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[a-z0-9][a-z0-9_.-]{0,49}$", "Lowercase letters, digits, '.', '_' or '-'."
                            )
                        ],
                        verbose_name="category",
                    ),
                ),
                (
                    "count",
                    models.PositiveIntegerField(
                        validators=[django.core.validators.MinValueValidator(1)], verbose_name="requests"
                    ),
                ),
                (
                    "window_seconds",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="0 for a calendar quota.",
                        verbose_name="sliding window (seconds)",
                    ),
                ),
                (
                    "calendar",
                    models.CharField(
                        blank=True,
                        choices=[("", "—"), ("day", "day"), ("week", "week"), ("month", "month")],
                        max_length=5,
                        verbose_name="calendar quota",
                    ),
                ),
                (
                    "scope",
                    models.CharField(
                        choices=[("key", "API key"), ("account", "account (all its keys together)")],
                        default="key",
                        max_length=7,
                        verbose_name="counted per",
                    ),
                ),
                (
                    "algorithm",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("", "Default (RATELIMIT_TIERS_ALGORITHM)"),
                            ("exact", "exact"),
                            ("counter", "counter"),
                        ],
                        default="",
                        max_length=16,
                        verbose_name="algorithm",
                    ),
                ),
                (
                    "until",
                    models.DateTimeField(
                        blank=True,
                        help_text="An account's override stops applying then.",
                        null=True,
                        verbose_name="until",
                    ),
                ),
                (
                    "account",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="rules",
                        to="ratelimit_tiers.account",
                        verbose_name="account",
                    ),
                ),
                (
                    "tier",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="rules",
                        to="ratelimit_tiers.tier",
                        verbose_name="tier",
                    ),
                ),
            ],
            options={
                "verbose_name": "limit rule",
                "verbose_name_plural": "limit rules",
                "ordering": ["tier_id", "account_id", "category", "scope", "calendar", "window_seconds"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("account__isnull", True), ("tier__isnull", False))
                        | models.Q(("account__isnull", False), ("tier__isnull", True)),
                        name="rlt_rule_one_owner",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("calendar", ""), ("window_seconds__gt", 0))
                        | models.Q(("calendar__in", ("day", "week", "month")), ("window_seconds", 0)),
                        name="rlt_rule_one_period",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("tier__isnull", False)),
                        fields=("tier", "category", "window_seconds", "calendar", "scope"),
                        name="rlt_rule_unique_per_tier",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("account__isnull", False)),
                        fields=("account", "category", "window_seconds", "calendar", "scope"),
                        name="rlt_rule_unique_per_account",
                    ),
                ],
            },
        ),
        # Nullable first, so that the columns can come back when migrating backwards.
        migrations.AlterField(
            model_name="tier",
            name="limit",
            field=models.PositiveIntegerField(null=True, verbose_name="requests per window"),
        ),
        migrations.RunPython(columns_to_rules, rules_to_columns),
        migrations.RemoveField(model_name="tier", name="limit"),
        migrations.RemoveField(model_name="tier", name="window_seconds"),
        migrations.RemoveField(model_name="tier", name="read_limit"),
        migrations.RemoveField(model_name="tier", name="write_limit"),
        migrations.RemoveField(model_name="tier", name="delete_limit"),
        migrations.RemoveField(model_name="tier", name="auth_limit"),
        migrations.RemoveField(model_name="tier", name="algorithm"),
        migrations.RemoveField(model_name="account", name="limit_override"),
        migrations.AlterModelOptions(
            name="tier", options={"ordering": ["pk"], "verbose_name": "tier", "verbose_name_plural": "tiers"}
        ),
    ]
