"""Agents' SIP secrets: generated apart from console passwords, rotatable, never in listings; upgrades migrate."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings, resolve_secrets
from identity import AccountStore
from queueing import AgentError, AgentStore
from storage import create_engine_from_url, migrate_database
from storage.migrate import alembic_config
from tests.support.hotline_process import run_hotline_command
from tests.support.ports import module_ports

QUEUES = ("complaints", "inquiries", "operator")


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    eng = create_engine_from_url(url)
    yield eng
    await eng.dispose()


async def test_each_agent_gets_its_own_generated_secret_never_listed(engine: AsyncEngine) -> None:
    store = AgentStore(engine, QUEUES)
    one = await store.add("agent7", {"inquiries": 0})
    two = await store.add("agent8", {"inquiries": 0})
    assert len(one.sip_secret) >= 32 and one.sip_secret != two.sip_secret
    assert one.sip_secret not in repr(one) and one.sip_secret not in json.dumps(one.to_dict())
    rotated = await store.rotate_sip_secret("agent7")
    assert rotated.sip_secret != one.sip_secret and (await store.get("agent7")).sip_secret == rotated.sip_secret
    with pytest.raises(AgentError, match="no agent named 'agent9'"):
        await store.rotate_sip_secret("agent9")
    with pytest.raises(AgentError, match="^SIP secret must be 16-128 printable"):
        await store.add("agent9", {"inquiries": 0}, sip_secret="short;one")


def test_configured_agents_get_a_sip_secret_apart_from_the_console_password(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path, agents=[{"name": "agent1"}, {"name": "agent2", "password": "console-pw-2"}])
    first = resolve_secrets(settings)
    again = resolve_secrets(settings)
    for a, b in zip(first.agents, again.agents, strict=True):
        assert a.password and a.sip_secret and a.password != a.sip_secret
        assert (a.password, a.sip_secret) == (b.password, b.sip_secret)  # generated once, kept in the secrets file
        assert a.sip_secret not in repr(a)
    assert oct(first.secrets_file.stat().st_mode & 0o777) == "0o600"


async def test_upgrade_replaces_sip_passwords_that_open_the_console(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0007")  # a database from before the split
    hasher = PasswordHasher()
    now = datetime.now(UTC)
    sync_url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(sync_url)
    with old.begin() as conn:
        for name, sip, console in (("agent1", "doubled-password", "doubled-password"),
                                   ("agent2", "a-phone-only-secret-of-some-length", "another-console-pw")):
            conn.execute(sa.text("INSERT INTO agents (name, display_name, sip_password, logged_in, paused, "
                                 "created_at, updated_at) VALUES (:n, :n, :s, 0, 0, :t, :t)"),
                         {"n": name, "s": sip, "t": now})
            conn.execute(sa.text("INSERT INTO accounts (username, display_name, password_hash, role, active, "
                                 "created_at) VALUES (:n, :n, :h, 'agent', 1, :t)"),
                         {"n": name, "h": hasher.hash(console), "t": now})
    old.dispose()
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    try:
        agents = {a.name: a for a in await AgentStore(engine, QUEUES).list()}
        assert agents["agent1"].sip_secret != "doubled-password" and len(agents["agent1"].sip_secret) >= 32
        assert agents["agent2"].sip_secret == "a-phone-only-secret-of-some-length"  # its phone keeps working
        accounts = AccountStore(engine)
        assert await accounts.verify("agent1", "doubled-password") is not None  # console login unchanged
        assert await accounts.verify("agent1", agents["agent1"].sip_secret) is None
        async with engine.connect() as conn:
            columns = {c["name"] for c in await conn.run_sync(lambda s: sa.inspect(s).get_columns("agents"))}
        assert "sip_password" not in columns and "sip_secret" in columns
    finally:
        await engine.dispose()


@pytest.mark.timeout(120)
async def test_cli_shows_the_secret_once_and_rotates_it(tmp_path: Path) -> None:
    env = {"HOTLINE_RUN_DIR": str(tmp_path), "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'h.db'}",
           "HOTLINE_AMI_PORT": str(module_ports(__name__).spare(0)), "HOTLINE_CONNECT_TIMEOUT": "1",
           "HOTLINE_LOG_LEVEL": "DEBUG"}
    code, _, err = await run_hotline_command(["db", "upgrade"], env)
    assert code == 0, err
    code, out, err = await run_hotline_command(["agents", "add", "agent7", "--queue", "inquiries"], env)
    assert code == 0, err
    added = json.loads(out)
    secret, console_password = added["sip_secret"], added["console_password"]
    assert len(secret) >= 32 and len(console_password) >= 12 and secret != console_password
    assert "shown only now" in err and secret not in err and console_password not in err
    engine = create_engine_from_url(env["DATABASE_URL"])
    try:
        assert await AccountStore(engine).verify("agent7", console_password) is not None
        assert await AccountStore(engine).verify("agent7", secret) is None
    finally:
        await engine.dispose()
    code, out, err = await run_hotline_command(["agents", "list", "--json"], env)
    assert code == 0 and secret not in out + err and "sip_secret" not in out
    code, out, err = await run_hotline_command(["agents", "rotate-sip-secret", "agent7"], env)
    assert code == 0, err
    rotated = json.loads(out)["sip_secret"]
    assert rotated != secret and rotated not in err
    conf = (tmp_path / "asterisk" / "etc" / "pjsip_agents.conf").read_text()
    assert f"password = {rotated}" in conf and secret not in conf
    assert oct(os.stat(tmp_path / "asterisk" / "etc" / "pjsip_agents.conf").st_mode & 0o777) == "0o600"
    code, _, err = await run_hotline_command(["agents", "rotate-sip-secret", "nobody"], env)
    assert code == 2 and err.strip().splitlines()[-1] == "error: no agent named 'nobody'"
