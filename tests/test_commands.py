from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ratelimit_tiers.models import APIKey
from tests.conftest import URL, key_client, set_rule
from tests.processes import ROOT, ProjectServer

# One of the processes below: connected and waiting at the start line, then
# exactly what ``manage.py ratelimit_tiers_rotate_key --skip-checks PREFIX`` runs.
ROTATE_AT_THE_START = """
import os, sys, time
import django
django.setup()
from django.core.management import execute_from_command_line
from django.db import connection
connection.ensure_connection()
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.001)
# Checks skipped: the testproject's W030 (its search view) would come first on stderr.
execute_from_command_line(["manage.py", "ratelimit_tiers_rotate_key", "--skip-checks", sys.argv[2]])
"""

KEYS_OF = """
import json
from ratelimit_tiers.models import APIKey
keys = APIKey.objects.filter(account__name=%r).order_by("pk")
print(json.dumps([(k.prefix, k.rotated_to.prefix if k.rotated_to else None) for k in keys]))
"""


def run(*args):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", ["ratelimit_tiers_create_key", "create_api_key"])
def test_create_key_under_both_names(db, command):
    out, err = run(command, "Beta Corp", "--tier", "basic", "--name", "ci")
    raw_key = out.strip().splitlines()[-1]
    key = APIKey.objects.get(account__name="Beta Corp")
    assert raw_key.startswith(key.prefix + ".")
    assert key.account.tier.name == "Basic"
    assert "Store it now" in err
    assert key_client(raw_key).get(URL).status_code == 200


def test_revoke_key(api, account):
    key = APIKey.objects.get()
    assert api.get(URL).status_code == 200
    out, _ = run("ratelimit_tiers_revoke_key", key.prefix)
    assert f"Revoked key {key.prefix} (main) of acme." in out
    assert api.get(URL).json()["code"] == "revoked"
    assert "already revoked" in run("ratelimit_tiers_revoke_key", key.prefix)[0]


def test_rotate_key_prints_the_new_key_last(raw_key, account, settings):
    settings.RATELIMIT_TIERS_ROTATION_GRACE = 600
    old = APIKey.objects.get()
    out, err = run("ratelimit_tiers_rotate_key", old.prefix)
    new_raw = out.strip().splitlines()[-1]
    old.refresh_from_db()
    assert new_raw.startswith(old.rotated_to.prefix + ".")
    assert "it works until" in err
    assert key_client(raw_key).get(URL).status_code == 200
    assert key_client(new_raw).get(URL).status_code == 200
    with pytest.raises(CommandError, match="already been rotated"):
        run("ratelimit_tiers_rotate_key", old.prefix)


def test_rotate_key_with_no_grace_retires_the_old_key_at_once(raw_key, account):
    prefix = APIKey.objects.get().prefix
    new_raw = run("ratelimit_tiers_rotate_key", prefix, "--grace", "0")[0].strip()
    assert key_client(raw_key).get(URL).json()["code"] == "expired"
    assert key_client(new_raw).get(URL).status_code == 200
    with pytest.raises(CommandError, match="must not be negative"):
        run("ratelimit_tiers_rotate_key", prefix, "--grace", "-1")


def test_usage_table_from_the_store(api, account):
    for _ in range(4):
        api.get(URL)
    api.post(URL, {"name": "x"}, format="json")
    revoked, _ = APIKey.objects.create_key(account=account, name="old", revoked=True)
    out, _ = run("ratelimit_tiers_usage", "--account", "acme")
    lines = out.splitlines()
    columns = ["account", "key", "name", "status", "category", "rule", "limit", "remaining", "reset"]
    assert lines[0].split() == columns
    prefix = APIKey.objects.get(name="main").prefix
    rows = {tuple(line.split()[1:8]) for line in lines[1:]}
    assert (prefix, "main", "active", "read", "all-60s", "60", "56") in rows
    assert (prefix, "main", "active", "write", "all-60s", "60", "59") in rows
    assert (prefix, "main", "active", "delete", "all-60s", "60", "60") in rows
    assert (revoked.prefix, "old", "revoked", "read", "-", "-", "-") in rows
    # Looking counts nothing.
    again = {tuple(line.split()[1:8]) for line in run("ratelimit_tiers_usage")[0].splitlines()[1:]}
    assert (prefix, "main", "active", "read", "all-60s", "60", "56") in again


def test_usage_errors_and_empty(db):
    with pytest.raises(CommandError, match="Unknown account"):
        run("ratelimit_tiers_usage", "--account", "nobody")
    assert run("ratelimit_tiers_usage")[0].strip() == "No API keys."


def test_reset_key(api, free_tier):
    set_rule(free_tier, 1)
    assert [api.get(URL).status_code for _ in range(2)] == [200, 429]
    out, _ = run("ratelimit_tiers_reset_key", APIKey.objects.get().prefix)
    assert "Reset the counters" in out
    assert api.get(URL).status_code == 200


@pytest.mark.parametrize(
    "command", ["ratelimit_tiers_revoke_key", "ratelimit_tiers_rotate_key", "ratelimit_tiers_reset_key"]
)
def test_unknown_prefix(db, command):
    with pytest.raises(CommandError, match="No API key has the prefix"):
        run(command, "nosuchprefix")


def test_store_outage_is_a_command_error(api, broken_store):
    prefix = APIKey.objects.get().prefix
    for command in ["ratelimit_tiers_reset_key", "ratelimit_tiers_usage"]:
        with pytest.raises(CommandError, match="store is unavailable"):
            run(command, *([prefix] if command.endswith("reset_key") else []))


@pytest.mark.parametrize(
    "command",
    [
        "ratelimit_tiers_create_key",
        "ratelimit_tiers_revoke_key",
        "ratelimit_tiers_rotate_key",
        "ratelimit_tiers_usage",
        "ratelimit_tiers_reset_key",
    ],
)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit):
        call_command(command, "--help")
    text = capsys.readouterr().out
    assert len(text) > 300
    assert "API key" in text


def test_rotation_grace_check(settings, db):
    from django.core import checks

    settings.RATELIMIT_TIERS_ROTATION_GRACE = -5
    assert "ratelimit_tiers.E021" in [m.id for m in checks.run_checks()]


def test_eight_processes_rotating_one_key_at_once(tmp_path):
    project = ProjectServer(tmp_path, "DEBUG = False\n")
    prefix = project.create_keys(("race", "Free", None))["race"].split(".")[0]
    (tmp_path / "rotate.py").write_text(ROTATE_AT_THE_START)
    start = tmp_path / "start"
    processes = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "rotate.py"), str(start), prefix],
            cwd=ROOT,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        assert [p.stdout.readline() for p in processes] == ["ready\n"] * 8
        start.touch()
        results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in processes]
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    [(_, new_raw, _)] = [result for result in results if result[0] == 0]
    # The others are told why, on one line: no traceback, no "database is locked".
    assert [(code, err) for code, _, err in results if code] == [
        (1, "CommandError: This key has already been rotated.\n")
    ] * 7
    keys = json.loads(project.manage("shell", "-c", KEYS_OF % "race").strip().splitlines()[-1])
    new_prefix = new_raw.strip().split(".")[0]
    assert keys == [[prefix, new_prefix], [new_prefix, None]]  # The losers' new keys were rolled back.
