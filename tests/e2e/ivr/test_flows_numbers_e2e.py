"""A second hotline number through the real parts: SIPp calls into Asterisk and the FastAGI bridge. The number
runs the default flow (with a warning at start) until its own flow is published, then that flow, without a
restart; an admin then switches the hotline number itself to it with `hotline flows route`."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.flows import flood_flow, prompt_seconds
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command, running_hotline
from tests.support.ports import module_ports
from tests.support.probe import Probe
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)
FLOOD_NUMBER = "12399"
ENV = {
    "HOTLINE_REDIS_KEY_PREFIX": "hotline-i3-numbers-e2e",
    "HOTLINE_IVR_NUMBERS": json.dumps({FLOOD_NUMBER: "flood-warning"}),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-flows-numbers-e2e", ports=PORTS, env=ENV)
    async with running_hotline(h):
        yield h


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def probe(hotline: HotlineUnderTest) -> AsyncIterator[Probe]:
    p = Probe(hotline)
    yield p
    await p.close()


def _call(probe: Probe, tmp: Path, caller: str, number: str, steps: list[Any], **kwargs: Any) -> CitizenCall:
    return CitizenCall(sip_port=probe.settings.sip_port, number=number, from_user=caller, work_dir=tmp / caller,
                       name=caller, steps=steps, **kwargs)


async def _flood_call(probe: Probe, tmp: Path, caller: str, number: str) -> Any:
    """A call that hears a warning flow: the flow marks the case, plays the warning and hangs up."""
    result = await _call(probe, tmp, caller, number, [("pause", 1000)], hangup="wait", wait_bye_ms=25000).run()
    assert result.answered and result.ok, result.describe()
    assert result.hung_up_by == "asterisk", result.describe()  # the flow's hangup node, not the caller
    case = await probe.case_by_caller(caller, until=lambda c: list(c.menu_path) == ["hangup"])
    assert case is not None and list(case.menu_path) == ["hangup"], case
    return case


async def test_second_number_runs_its_flow_once_published(hotline: HotlineUnderTest, probe: Probe,
                                                          tmp_path: Path) -> None:
    log = hotline.log_path.read_text(errors="replace")
    assert (f"IVR numbers: number {FLOOD_NUMBER} runs flow 'flood-warning', which is neither published nor a "
            "shipped file; its calls run 'default' until it is published") in log

    # Not published yet: the caller of 12399 still reaches the hotline (the default flow) and presses 2.
    welcome = prompt_seconds(tmp_path, "welcome", probe.settings.hotline_number)
    early = await _call(probe, tmp_path, "01045000001", FLOOD_NUMBER,
                        [("pause", int((welcome + 1.0) * 1000)), ("dtmf", "2"), ("pause", 2500)]).run()
    assert early.answered and early.ok, early.describe()
    case = await probe.case_by_caller("01045000001", until=lambda c: c.category == "inquiry")
    assert case.category == "inquiry" and list(case.menu_path)[:1] == ["2"], case
    assert "number 12399: flow 'flood-warning' cannot run" in hotline.log_path.read_text(errors="replace")

    flow_file = tmp_path / "flood-warning.yaml"
    flow_file.write_text(flood_flow(), encoding="utf-8")
    code, out, err = await run_hotline_command(["flows", "publish", str(flow_file), "--actor", "tester",
                                                "--comment", "flood warning line"], hotline.env)
    assert code == 0, err[-2000:]
    assert "flow flood-warning: version 1 is live" in out

    flood = await _flood_call(probe, tmp_path, "01045000002", FLOOD_NUMBER)
    assert flood.category == "flood_warning"
    # The hotline number itself still runs the default flow.
    default = await _call(probe, tmp_path, "01045000003", probe.settings.hotline_number,
                          [("pause", int((welcome + 1.0) * 1000)), ("dtmf", "2"), ("pause", 2500)]).run()
    assert default.ok, default.describe()
    case = await probe.case_by_caller("01045000003", until=lambda c: c.category == "inquiry")
    assert case.category == "inquiry", case


async def test_admin_switches_the_hotline_number_to_another_flow(hotline: HotlineUnderTest, probe: Probe,
                                                                 tmp_path: Path) -> None:
    """The admin routes the hotline number to a flow of their own (published here, so the test needs no other to
    have run) and back again, so the hotline number runs the default flow for whatever comes next."""
    env = hotline.env
    number = probe.settings.hotline_number
    code, out, err = await run_hotline_command(["flows", "route", number, "nope"], env)
    assert code == 1 and err.strip().splitlines()[-1] == "error: no flow named 'nope': publish it first"
    flow_file = tmp_path / "storm-warning.yaml"
    flow_file.write_text(flood_flow("storm_warning", name="storm-warning"), encoding="utf-8")
    code, out, err = await run_hotline_command(["flows", "publish", str(flow_file), "--actor", "tester"], env)
    assert code == 0, err[-2000:]
    code, out, err = await run_hotline_command(["flows", "route", number, "storm-warning", "--actor", "tester"], env)
    assert code == 0, err[-2000:]
    try:
        assert out.strip() == f"number {number} runs flow storm-warning from its next call on (routed by tester)"
        switched = await _flood_call(probe, tmp_path, "01045000011", number)
        assert switched.category == "storm_warning"  # no restart: the next call took the new route

        code, out, err = await run_hotline_command(["flows", "routes"], env)
        assert code == 0
        assert f"{number}  storm-warning  (routed by tester at " in out
        assert f"{FLOOD_NUMBER}  flood-warning  (configured)" in out
        code, out, err = await run_hotline_command(["flows", "audit"], env)
        route_line = next(line for line in out.splitlines() if " route " in line)
        assert "tester" in route_line and f"number {number}: default → storm-warning" in route_line
    finally:
        code, out, err = await run_hotline_command(["flows", "route", number, "default", "--actor", "tester"], env)
        assert code == 0, err[-2000:]
