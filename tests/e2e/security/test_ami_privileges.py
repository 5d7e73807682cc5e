"""Real Asterisk: the bridge's AMI account can do what the bridge does, and nothing that reaches a shell or the CLI."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from queueing import PjsipAgentProvisioner
from queueing.agents import Agent
from telephony import AmiClient, AsteriskConsole, AsteriskProcess
from telephony.asterisk_process import AsteriskConfig
from tests.support.asterisk_fixture import asterisk_ports, make_test_config
from tests.support.ports import module_ports

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

PORTS = asterisk_ports(module_ports(__name__))


@pytest.fixture(scope="module")
def ami_config(tmp_path_factory: pytest.TempPathFactory) -> AsteriskConfig:
    """The module's Asterisk configuration: the project's templates, the project's AMI account."""
    return make_test_config(tmp_path_factory.mktemp("ami-ast"), agents=(), **PORTS)  # members come from AMI


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ami(ami_config: AsteriskConfig) -> AsyncIterator[AmiClient]:
    """A running Asterisk and the bridge's own AMI client logged in with the project's account."""
    async with AsteriskProcess(ami_config):
        client = AmiClient(ami_config.ami_host, ami_config.ami_port, ami_config.ami_username, ami_config.ami_secret)
        await client.start()
        try:
            await client.wait_connected(timeout=10)
            yield client
        finally:
            await client.close()


def _first(result: Any) -> dict[str, Any]:
    return dict(result[0] if isinstance(result, list) else result)


async def _refused(ami: AmiClient, fields: dict[str, str]) -> str:
    answer = _first(await ami.action(fields, check=False, as_list=False))
    assert answer.get("Response") == "Error", (fields, answer)
    return str(answer.get("Message"))


async def test_cli_shell_and_config_actions_are_refused(ami: AmiClient, ami_config: AsteriskConfig,
                                                        tmp_path: Path) -> None:
    assert await _refused(ami, {"Action": "Command", "Command": "core show version"}) == "Permission denied"
    marker = tmp_path / "pwned"
    # Originate into System() and Getvar of SHELL() need the `system` class on top of originate / reporting.
    await _refused(ami, {"Action": "Originate", "Channel": "Local/s@hotline-demo-caller", "Application": "System",
                         "Data": f"touch {marker}", "Async": "true"})
    await _refused(ami, {"Action": "Getvar", "Variable": f"SHELL(touch {marker})"})
    for fields in ({"Action": "DBPut", "Family": "hotline_callback", "Key": "x", "Val": "ANSWER"},
                   {"Action": "UpdateConfig", "SrcFilename": "extensions.conf", "DstFilename": "extensions.conf",
                    "Action-000000": "Append", "Cat-000000": "hotline-agents",
                    "Var-000000": "exten", "Value-000000": "666,1,System(id)"},
                   {"Action": "GetConfig", "Filename": "manager.conf"},
                   {"Action": "Reload", "Module": "res_pjsip.so"},
                   {"Action": "ModuleLoad", "Module": "res_pjsip.so", "LoadType": "unload"},
                   {"Action": "Hangup", "Channel": "PJSIP/agent1-00000001"},
                   {"Action": "Redirect", "Channel": "PJSIP/agent1-00000001", "Context": "hotline-agents",
                    "Exten": "*43", "Priority": "1"}):
        assert await _refused(ami, fields) == "Permission denied", fields
    await asyncio.sleep(1.0)
    assert not marker.exists()
    extensions = (ami_config.etc_dir / "extensions.conf").read_text()
    assert "System(id)" not in extensions


async def test_the_actions_the_bridge_sends_still_work(ami: AmiClient, ami_config: AsteriskConfig) -> None:
    # agents: queue membership and pauses (queueing.agents)
    await ami.action({"Action": "QueueAdd", "Queue": "inquiries", "Interface": "PJSIP/agent2", "Penalty": "1",
                      "MemberName": "agent2", "StateInterface": "PJSIP/agent2"}, as_list=False)
    await ami.action({"Action": "QueuePenalty", "Interface": "PJSIP/agent2", "Penalty": "2", "Queue": "inquiries"},
                     as_list=False)
    await ami.action({"Action": "QueuePause", "Interface": "PJSIP/agent2", "Paused": "true", "Reason": "break"},
                     as_list=False)
    members = [e for e in await ami.event_list({"Action": "QueueStatus"}, timeout=10)
               if e.get("Event") == "QueueMember" and e.get("Queue") == "inquiries"]
    assert [(m.get("Location"), m.get("Paused"), m.get("PausedReason")) for m in members] == [
        ("PJSIP/agent2", "1", "break")]
    await ami.action({"Action": "QueueRemove", "Queue": "inquiries", "Interface": "PJSIP/agent2"}, as_list=False)
    # live state and callback recovery (queue_live, call_tracker, callbacks)
    assert isinstance(await ami.event_list({"Action": "CoreShowChannels"}, timeout=10), list)
    missing = _first(await ami.action({"Action": "DBGet", "Family": "hotline_callback", "Key": "nothing"},
                                      check=False))
    assert "not found" in str(missing.get("Message")).lower(), missing
    await ami.action({"Action": "Getvar", "Variable": "EPOCH"}, as_list=False)
    # callbacks and wait announcements originate into the project's dialplan, ChanSpy included
    await ami.action({"Action": "Originate", "Channel": "Local/s@hotline-demo-caller/n", "Application": "Wait",
                      "Data": "1", "Variable": "DEMO_WAIT=0", "Async": "true", "Timeout": "5000"}, as_list=False)
    await ami.action({"Action": "Originate", "Channel": "Local/s@hotline-queue-announce/n",
                      "Application": "ChanSpy", "Data": "PJSIP/nobody,qwE", "Variable": "ANNOUNCE_FILE=beep",
                      "Async": "true", "Timeout": "5000"}, as_list=False)


async def test_the_owner_reloads_endpoints_and_drops_astdb_records_on_the_console(
        ami: AmiClient, ami_config: AsteriskConfig) -> None:
    console = AsteriskConsole(ami_config.control_socket)
    assert "Asterisk 16" in await console.command("core show version")
    provisioner = PjsipAgentProvisioner(ami_config.etc_dir, ami_config.templates_dir / "pjsip_agent.conf.part",
                                        ami_config.sip_host, console)
    agent9 = Agent("agent9", "agent9", "agent9-secret-of-length", {"inquiries": 0}, False, False, None)
    await provisioner.apply([agent9], reload=True)
    assert "agent9" in await console.command("pjsip show endpoint agent9")
    await console.command("database put hotline_callback callback-1-1 ANSWER")
    assert await console.command("database get hotline_callback callback-1-1") == "Value: ANSWER\n"
    await console.command("database del hotline_callback callback-1-1")
    missing = _first(await ami.action({"Action": "DBGet", "Family": "hotline_callback", "Key": "callback-1-1"},
                                      check=False))
    assert "not found" in str(missing.get("Message")).lower(), missing
