"""Real Asterisk + SIPp: only the carrier's source address is the trunk; a forged "trunk" From user is refused."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from telephony.asterisk_process import AsteriskConfig, AsteriskProcess
from tests.support.asterisk_fixture import FastAgiStub, asterisk_ports, make_test_config
from tests.support.ports import module_ports
from tests.support.sipp import CitizenCall, register_agent

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

CARRIER = "127.0.0.9"  # trunk_addresses: the carrier is another address than the attacker's 127.0.0.1
PORTS = asterisk_ports(module_ports(__name__))
CONTACT_PORT = module_ports(__name__).spare(0)  # the registering phone's own


@pytest.fixture(scope="module")
def trunk_config(tmp_path_factory: pytest.TempPathFactory) -> AsteriskConfig:
    """An Asterisk whose trunk is CARRIER only."""
    return make_test_config(tmp_path_factory.mktemp("trunk-ast"), trunk_addresses=(CARRIER,), **PORTS)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def trunk_asterisk(trunk_config: AsteriskConfig) -> AsyncIterator[AsteriskProcess]:
    """The Asterisk of this module, started and stopped here."""
    async with AsteriskProcess(trunk_config) as proc:
        yield proc


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ivr(trunk_config: AsteriskConfig) -> AsyncIterator[FastAgiStub]:
    """Stands in for the IVR: every session it serves is a call that reached the hotline context."""
    stub = FastAgiStub(trunk_config.agi_host, trunk_config.agi_port)
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


async def _no_ivr_session(stub: FastAgiStub, seconds: float = 2.0) -> bool:
    try:
        await stub.next_session(timeout=seconds)
    except TimeoutError:
        return True
    return False


async def test_forged_trunk_from_user_is_refused(trunk_asterisk: AsteriskProcess, trunk_config: AsteriskConfig,
                                                 ivr: FastAgiStub, tmp_path: Path) -> None:
    ivr.reset([])
    forged = await CitizenCall(trunk_config.sip_port, number="12345", from_user="trunk", from_domain="anything",
                               local_ip="127.0.0.1", hangup="wait", wait_bye_ms=3000, work_dir=tmp_path,
                               name="forged", timeout=20).run()
    assert not forged.answered, forged.describe()
    assert forged.final_status in (401, 403), forged.describe()
    assert await _no_ivr_session(ivr), "the forged INVITE reached the hotline context (an IVR session ran)"
    log = trunk_config.messages_log.read_text(encoding="utf-8", errors="replace")
    assert "<sip:trunk@anything>" in log and "No matching endpoint found" in log, log[-2000:]


async def test_agent_name_as_from_user_must_authenticate(trunk_asterisk: AsteriskProcess,
                                                         trunk_config: AsteriskConfig, ivr: FastAgiStub,
                                                         tmp_path: Path) -> None:
    ivr.reset([])
    call = await CitizenCall(trunk_config.sip_port, number="12345", from_user="agent1", local_ip="127.0.0.1",
                             hangup="wait", wait_bye_ms=3000, work_dir=tmp_path, name="as-agent", timeout=20).run()
    assert not call.answered and call.final_status in (401, 407), call.describe()
    assert await _no_ivr_session(ivr)


async def test_carrier_address_reaches_the_ivr_whatever_its_from_user(
        trunk_asterisk: AsteriskProcess, trunk_config: AsteriskConfig, ivr: FastAgiStub, tmp_path: Path) -> None:
    ivr.reset([])
    for who in ("13800138000", "trunk"):
        call = CitizenCall(trunk_config.sip_port, number="12345", from_user=who, local_ip=CARRIER, hangup="wait",
                           wait_bye_ms=10000, work_dir=tmp_path, name=f"carrier-{who}", timeout=30)
        result, session = await asyncio.gather(call.run(), ivr.next_session(timeout=25))
        assert result.answered, result.describe()
        assert session.env["agi_callerid"] == who
        assert session.env["agi_channel"].startswith("PJSIP/trunk-")


async def test_agents_still_register_by_username_and_password(trunk_asterisk: AsteriskProcess,
                                                              trunk_config: AsteriskConfig, tmp_path: Path) -> None:
    good = await register_agent("agent2", "agent2-pass", trunk_config.sip_port, CONTACT_PORT, work_dir=tmp_path)
    assert good.registered, good.sipp.describe()
    await register_agent("agent2", "agent2-pass", trunk_config.sip_port, CONTACT_PORT, expires=0, work_dir=tmp_path)
    bad = await register_agent("agent2", "wrong-password", trunk_config.sip_port, CONTACT_PORT, work_dir=tmp_path)
    assert not bad.registered and bad.refused_status in (401, 403), bad.sipp.describe()
