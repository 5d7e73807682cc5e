"""Real Asterisk + SIPp: an agent's phone registers with its SIP secret, never with the console password."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from identity import AccountStore
from queueing import AgentService, AgentStore, PjsipAgentProvisioner
from storage import create_engine_from_url, migrate_database
from telephony import AmiClient, AsteriskConsole, AsteriskProcess
from tests.support.asterisk_fixture import asterisk_ports, make_test_config
from tests.support.ports import module_ports
from tests.support.sipp import register_agent

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

PORTS = asterisk_ports(module_ports(__name__))
CONTACT_PORT = module_ports(__name__).spare(0)  # the registering phone's own
CONSOLE_PASSWORD = "agent5-console-pw"


@pytest_asyncio.fixture(loop_scope="session")
async def hotline_parts(tmp_path: Path) -> AsyncIterator[tuple[AgentService, AccountStore, int]]:
    """A migrated database, Asterisk with agents provisioned from it (as `hotline run` does), the AMI client."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine: AsyncEngine = create_engine_from_url(url)
    cfg = make_test_config(tmp_path / "ast", agents=(), **PORTS)
    provisioner = PjsipAgentProvisioner(cfg.etc_dir, cfg.templates_dir / "pjsip_agent.conf.part", cfg.sip_host,
                                        AsteriskConsole(cfg.control_socket))
    try:
        async with AsteriskProcess(cfg):
            ami = AmiClient(cfg.ami_host, cfg.ami_port, cfg.ami_username, cfg.ami_secret)
            await ami.start()
            try:
                await ami.wait_connected(timeout=10)
                yield AgentService(AgentStore(engine, ("inquiries",)), ami, provisioner), AccountStore(engine), \
                    cfg.sip_port
            finally:
                await ami.close()
    finally:
        await engine.dispose()


async def test_phone_registers_with_sip_secret_not_console_password(hotline_parts, tmp_path: Path) -> None:
    service, accounts, sip_port = hotline_parts
    agent = await service.add("agent5", {"inquiries": 0})  # what `hotline agents add` does, then the account
    await accounts.create("agent5", CONSOLE_PASSWORD, "agent", sip_endpoint="agent5")
    assert await accounts.verify("agent5", CONSOLE_PASSWORD) is not None

    by_console_password = await register_agent("agent5", CONSOLE_PASSWORD, sip_port, CONTACT_PORT, work_dir=tmp_path)
    assert not by_console_password.registered, by_console_password.sipp.describe()
    assert by_console_password.refused_status in (401, 403), by_console_password.sipp.describe()

    good = await register_agent("agent5", agent.sip_secret, sip_port, CONTACT_PORT, work_dir=tmp_path)
    assert good.registered, good.sipp.describe()
    await register_agent("agent5", agent.sip_secret, sip_port, CONTACT_PORT, expires=0, work_dir=tmp_path)

    rotated = await service.rotate_sip_secret("agent5")  # Asterisk reloads the endpoints on its console
    old = await register_agent("agent5", agent.sip_secret, sip_port, CONTACT_PORT, work_dir=tmp_path)
    assert not old.registered and old.refused_status in (401, 403), old.sipp.describe()
    new = await register_agent("agent5", rotated.sip_secret, sip_port, CONTACT_PORT, work_dir=tmp_path)
    assert new.registered, new.sipp.describe()
    await register_agent("agent5", rotated.sip_secret, sip_port, CONTACT_PORT, expires=0, work_dir=tmp_path)
