"""Migration 0005 on a real database: the tier and account limit columns become rules that apply
exactly the old limits in every category, and migrating backwards puts the columns back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from ratelimit_tiers.policies import load_policy

APP = "ratelimit_tiers"
BEFORE = (APP, "0004_rotate_permission")
RULES = (APP, "0005_limit_rules")
#: The categories the columns knew, and one they did not (it met the tier's limit).
CATEGORIES = ("read", "write", "delete", "auth", "search")

#: Tiers as the columns held them: (limit, window, per-category limits, algorithm).
TIERS = {
    "Plain": (100, 60, {}, ""),
    "Split": (50, 10, {"write": 5, "delete": 1}, "counter"),
    "Every": (1000, 3600, {"read": 900, "write": 90, "delete": 9, "auth": 3}, "exact"),
}
#: Accounts: the prefix of their one key, (tier, custom limit).
ACCOUNTS = {
    "plain": ("Plain", None),
    "split": ("Split", None),
    "splitcustom": ("Split", 7),
    "everycustom": ("Every", 20_000),
}


def migrate(target):
    """Migrate the test database to ``target``; return the apps of that state."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()  # What is applied now.
    return executor.loader.project_state([target]).apps


def old_limit(tier, override, category):
    """What the columns applied to a category: the custom limit, else the category's, else the tier's."""
    limit, window, own, algorithm = TIERS[tier]
    return (override if override is not None else own.get(category, limit), window, algorithm)


@pytest.fixture
def at_0004(transactional_db, django_db_serialized_rollback):
    """The database at 0004, with tiers and accounts in the old columns; back at the latest after."""
    leaf = MigrationExecutor(connection).loader.graph.leaf_nodes(APP)[0]
    try:
        apps = migrate(BEFORE)
        Tier, Account, APIKey = (apps.get_model(APP, name) for name in ("Tier", "Account", "APIKey"))
        tiers = {}
        for name, (limit, window, own, algorithm) in TIERS.items():
            fields = {f"{category}_limit": value for category, value in own.items()}
            tiers[name] = Tier.objects.create(
                name=name, limit=limit, window_seconds=window, algorithm=algorithm, **fields
            )
        for name, (tier, override) in ACCOUNTS.items():
            account = Account.objects.create(name=name, tier=tiers[tier], limit_override=override)
            APIKey.objects.create(account=account, name=name, prefix=name, hashed_secret="x")
        yield apps
    finally:
        migrate(leaf)


def test_the_columns_become_rules_that_apply_the_same_limits(at_0004):
    migrate(RULES)
    for name, (tier, override) in ACCOUNTS.items():
        policy = load_policy(name)
        assert policy.tier == tier
        for category in CATEGORIES:
            applied = [(r.count, r.window, r.algorithm) for r in policy.applicable(category)]
            assert applied == [old_limit(tier, override, category)], (name, category)
            # Each per key, over a sliding window, for good.
            assert {(r.scope, r.calendar, r.until) for r in policy.applicable(category)} == {
                ("key", "", None)
            }


def test_the_seeded_tiers_keep_their_one_limit_through_both_ways(at_0004):
    apps = migrate(BEFORE)
    seeded = ["Free", "Basic", "Pro", "Enterprise"]
    Tier = apps.get_model(APP, "Tier")
    assert [Tier.objects.get(name=name).limit for name in seeded] == [60, 300, 1000, 5000]
    apps = migrate(RULES)
    LimitRule = apps.get_model(APP, "LimitRule")
    rules = LimitRule.objects.filter(tier__name__in=seeded).order_by("count")
    rows = rules.values_list("tier__name", "category", "count", "window_seconds", "calendar", "scope")
    assert list(rows) == [
        (name, "", count, 60, "", "key") for name, count in zip(seeded, [60, 300, 1000, 5000], strict=True)
    ]


def test_migrating_backwards_restores_the_columns(at_0004):
    before = columns(at_0004)
    migrate(RULES)
    assert columns(migrate(BEFORE)) == before


def columns(apps):
    Tier, Account = apps.get_model(APP, "Tier"), apps.get_model(APP, "Account")
    fields = ["name", "limit", "window_seconds", "algorithm", *(f"{c}_limit" for c in CATEGORIES[:4])]
    tiers = sorted(Tier.objects.values_list(*fields))
    accounts = sorted(Account.objects.values_list("name", "tier__name", "limit_override"))
    assert [row[0] for row in tiers] == sorted(["Free", "Basic", "Pro", "Enterprise", *TIERS])
    return tiers, accounts
