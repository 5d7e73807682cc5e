"""The migration runner: bring a database's schema up to date with the Alembic revisions in storage/migrations/."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

from .engine import normalize_database_url
from .errors import StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic keeps the running migration's context in a process-wide proxy (alembic.context), so two
# upgrades in threads of one process would trample each other: they take turns. Across processes
# the migrations lock the database itself (see storage/migrations/env.py).
_ALEMBIC_TURN = threading.Lock()


def alembic_config(url: str, table_modules: tuple[str, ...] = ()) -> Config:
    """An Alembic Config for this database without any alembic.ini (for `hotline db ...` commands and tests).

    table_modules: modules to import so their tables are on the registry (autogenerate and `check` need them;
    an upgrade does not)."""
    parsed = normalize_database_url(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Passed as an attribute, not a main option: ini interpolation would mangle '%' in passwords.
    config.attributes["database_url"] = parsed.render_as_string(hide_password=False)
    config.attributes["table_modules"] = tuple(table_modules)
    return config


def migrate_database(url: str) -> None:
    """Upgrade the database to the newest revision (a no-op when already current). Blocking: run it in an executor."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop in this thread: the migration may start its own
    else:
        raise StorageError(
            "migrate_database() blocks; call it via loop.run_in_executor(None, migrate_database, url)"
        )
    config = alembic_config(url)
    with _ALEMBIC_TURN:
        command.upgrade(config, "head")
