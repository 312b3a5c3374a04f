"""The test suite's database: SQLite by default, PostgreSQL with ``RATELIMIT_TIERS_TEST_DB=postgres``.

For PostgreSQL the suite runs a private cluster of Debian's ``postgresql``
package: initdb in a temporary directory with trust authentication, listening
on a unix socket in that directory only (no TCP port). It starts on first use
and stops at the end of the session. initdb refuses to run as root, so under
root the cluster belongs to the ``postgres`` system user the package creates.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connections
from psycopg import sql

BACKEND_ENV = "RATELIMIT_TIERS_TEST_DB"
BACKENDS = ("sqlite", "postgres")
POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian: /usr/lib/postgresql/<version>/bin
SUPERUSER = "postgres"
SERVER_OPTIONS = [
    "listen_addresses=''",
    # A throwaway cluster: durability only slows the suite down.
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
]


def backend() -> str:
    name = os.environ.get(BACKEND_ENV, "sqlite")
    if name not in BACKENDS:
        raise RuntimeError(f"{BACKEND_ENV}={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory (never PATH, which has no initdb on Debian)."""
    found = sorted(
        POSTGRES_ROOT.glob("*/bin/initdb"),
        key=lambda path: tuple(int(part) for part in path.parent.parent.name.split(".") if part.isdigit()),
    )
    if not found:
        raise RuntimeError(
            f"{BACKEND_ENV}=postgres needs PostgreSQL in {POSTGRES_ROOT}: apt-get install postgresql"
        )
    return found[-1].parent


class Cluster:
    """initdb + pg_ctl in a temporary directory, which is also the server's socket directory."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.directory = Path(tempfile.mkdtemp(prefix="rlt-postgres-"))
        self.data = self.directory / "data"
        # initdb refuses root: as root, run the server as the package's system user.
        self.owner = SUPERUSER if os.geteuid() == 0 else None
        if self.owner is not None:
            shutil.chown(self.directory, self.owner)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = " ".join(f"-c {option}" for option in SERVER_OPTIONS)
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-o",
            f"{options} -c unix_socket_directories={self.directory}",
        )
        self._numbers = itertools.count(1)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.owner is not None:
            # util-linux's runuser, in /usr/sbin (often not on a non-login PATH).
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            command = [runuser, "-u", self.owner, "--", *command]
        result = subprocess.run(command, cwd=self.directory, capture_output=True, text=True, check=False)
        if result.returncode:
            log = self.directory / "server.log"
            raise RuntimeError(
                f"{program} failed:\n{result.stdout}{result.stderr}"
                + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
            )

    def settings(self, name: str) -> dict[str, object]:
        """A ``DATABASES`` entry for the database ``name`` on this cluster."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "HOST": str(self.directory),
            "PORT": "",
            "USER": SUPERUSER,
            "PASSWORD": "",
            "OPTIONS": {},
        }

    def create_database(self) -> dict[str, str]:
        """A new, empty database; returns the environment that points testproject/settings.py at it."""
        name = f"project_{next(self._numbers)}"
        with psycopg.connect(
            host=str(self.directory), user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return {
            "DJANGO_DB_ENGINE": "postgresql",
            "DJANGO_DB": name,
            "DJANGO_DB_HOST": str(self.directory),
            "DJANGO_DB_USER": SUPERUSER,
        }

    def allow_connections(self, name: str, allowed: bool) -> None:
        """Open or close the database ``name`` to connections; closing also ends the open ones."""
        with psycopg.connect(
            host=str(self.directory), user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if allowed else "false")
                )
            )
            if not allowed:
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
                )

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.directory, ignore_errors=True)


_cluster: Cluster | None = None


def cluster() -> Cluster:
    """The session's cluster, started on first use."""
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
    return _cluster


def stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


def database_env(directory: Path) -> dict[str, str]:
    """Environment variables that give a testproject subprocess a database of its own."""
    if backend() == "postgres":
        return cluster().create_database()
    return {"DJANGO_DB_ENGINE": "sqlite3", "DJANGO_DB": str(directory / "db.sqlite3")}


@contextmanager
def outage(env: dict[str, str]) -> Iterator[None]:
    """Inside the block, the project database that ``env`` names is gone: a real outage.

    PostgreSQL refuses connections to it (and ends the open ones); a SQLite file is
    moved away and a directory put in its place ("unable to open database file").
    """
    if env["DJANGO_DB_ENGINE"] == "postgresql":
        cluster().allow_connections(env["DJANGO_DB"], False)
        try:
            yield
        finally:
            cluster().allow_connections(env["DJANGO_DB"], True)
        return
    database = Path(env["DJANGO_DB"])
    away = database.with_name(database.name + ".away")
    database.rename(away)
    database.mkdir()
    try:
        yield
    finally:
        database.rmdir()
        away.rename(database)


def use_for_tests() -> None:
    """Point pytest-django's test database at the cluster, before it creates it."""
    settings.DATABASES["default"].update(cluster().settings("ratelimit_tiers"))
    # A wrapper made for the SQLite settings (never connected: pytest-django
    # blocks the database until now) would outlive them.
    for wrapper in connections.all(initialized_only=True):
        del connections[wrapper.alias]
