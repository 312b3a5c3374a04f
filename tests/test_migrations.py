"""Migration 0005 on a real database: the tier and account limit columns become rules that apply
exactly the old limits in every category, and migrating backwards puts the columns back.

The migrations run in a process of their own, on a database of its own (SQLite or PostgreSQL, as
the suite's): migrating the suite's test database back and forth would need a transactional test,
whose flush takes the seeded tiers from the tests that run after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import postgres
from tests.processes import ROOT

#: The categories the columns knew, and one they did not (it met the tier's limit).
CATEGORIES = ("read", "write", "delete", "auth", "search")
SEEDED = {"Free": 60, "Basic": 300, "Pro": 1000, "Enterprise": 5000}

#: Tiers as the columns held them: (limit, window, per-category limits, algorithm).
TIERS = {
    "Plain": (100, 60, {}, ""),
    "Split": (50, 10, {"write": 5, "delete": 1}, "counter"),
    "Every": (1000, 3600, {"read": 900, "write": 90, "delete": 9, "auth": 3}, "exact"),
}
#: Accounts, also the prefix of their one key: (tier, custom limit).
ACCOUNTS = {
    "plain": ("Plain", None),
    "split": ("Split", None),
    "splitcustom": ("Split", 7),
    "everycustom": ("Every", 20_000),
}

MIGRATE_BOTH_WAYS = """
import json, os
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

APP = "ratelimit_tiers"
tiers, accounts, categories = json.loads(os.environ["MIGRATION_SPEC"])


def migrate(name):
    call_command("migrate", APP, name, verbosity=0)
    loader = MigrationExecutor(connection).loader
    return loader.project_state([(APP, loader.get_migration_by_prefix(APP, name).name)]).apps


def columns(apps):
    Tier, Account = apps.get_model(APP, "Tier"), apps.get_model(APP, "Account")
    fields = ["name", "limit", "window_seconds", "algorithm", *(f"{c}_limit" for c in categories[:4])]
    return {
        "tiers": sorted(Tier.objects.values_list(*fields)),
        "accounts": sorted(Account.objects.values_list("name", "tier__name", "limit_override")),
    }


apps = migrate("0004")
Tier, Account, APIKey = (apps.get_model(APP, name) for name in ("Tier", "Account", "APIKey"))
for name, (limit, window, own, algorithm) in tiers.items():
    fields = {f"{category}_limit": value for category, value in own.items()}
    Tier.objects.create(name=name, limit=limit, window_seconds=window, algorithm=algorithm, **fields)
for name, (tier, override) in accounts.items():
    account = Account.objects.create(name=name, tier=Tier.objects.get(name=tier), limit_override=override)
    APIKey.objects.create(account=account, name=name, prefix=name, hashed_secret="x")
result = {"before": columns(apps)}

apps = migrate("0005")
from ratelimit_tiers.policies import load_policy

fields = ("count", "window", "calendar", "scope", "algorithm", "until")
result["applied"] = {
    name: {c: [[getattr(r, f) for f in fields] for r in load_policy(name).applicable(c)] for c in categories}
    for name in accounts
}
LimitRule = apps.get_model(APP, "LimitRule")
result["rules"] = list(
    LimitRule.objects.order_by("pk").values_list(
        "tier__name", "account__name", "category", "count", "window_seconds", "calendar", "scope", "algorithm"
    )
)
result["after"] = columns(migrate("0004"))
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """What the database held at 0004, what 0005 applies, and what migrating back to 0004 restores."""
    directory = tmp_path_factory.mktemp("migrations")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        **postgres.database_env(directory),
        "MIGRATION_SPEC": json.dumps([TIERS, ACCOUNTS, CATEGORIES]),
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c", MIGRATE_BOTH_WAYS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def old_limit(tier, override, category):
    """What the columns applied to a category: the custom limit, else the category's, else the tier's."""
    limit, window, own, algorithm = TIERS[tier]
    return [
        override if override is not None else own.get(category, limit),
        window,
        "",
        "key",
        algorithm,
        None,
    ]


@pytest.mark.parametrize("account", list(ACCOUNTS))
def test_the_columns_become_rules_that_apply_the_same_limits(migrated, account):
    tier, override = ACCOUNTS[account]
    for category in CATEGORIES:
        # One rule per category, per key, over the tier's sliding window, for good.
        assert migrated["applied"][account][category] == [old_limit(tier, override, category)], category


def test_the_seeded_tiers_become_one_rule_each(migrated):
    seeded = [row for row in migrated["rules"] if row[0] in SEEDED]
    assert seeded == [[name, None, "", count, 60, "", "key", ""] for name, count in SEEDED.items()]


def test_migrating_backwards_restores_the_columns(migrated):
    assert migrated["after"] == migrated["before"]
    names = [row[0] for row in migrated["before"]["tiers"]]
    assert names == sorted([*SEEDED, *TIERS])
    limits = {row[0]: row[1] for row in migrated["before"]["tiers"]}
    assert {name: limits[name] for name in SEEDED} == SEEDED
