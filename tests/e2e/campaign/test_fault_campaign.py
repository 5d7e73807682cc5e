"""A reduced fault campaign through the real parts: six SIPp citizen calls through `hotline run` (its own Redis,
SQLite) while an exclusive lock holds the database for 15 s; every answered call keeps exactly one case and
/healthz is ok again within 10 s of the lock's release (the full campaign: benchmarks/fault_campaign.py)."""
from __future__ import annotations

import shutil

import pytest

from tests.support.fault_campaign import CampaignConfig, Ports, format_table, run_campaign
from tests.support.hotline_process import PROJECT_ROOT
from tests.support.ports import module_ports

pytestmark = [pytest.mark.asterisk, pytest.mark.redis, pytest.mark.vosk, pytest.mark.timeout(240)]

PORTS = Ports(module_ports(__name__))  # the hotline, its own Redis and the carrier in this module's block
WORK = PROJECT_ROOT / "var" / "test-fault-campaign"


async def test_a_locked_database_loses_no_case_under_load() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    config = CampaignConfig(calls=6, agents=2, spread_s=12.0, fault_after_s=4.0, hold_s=15.0, settle_s=60.0)
    [row] = await run_campaign(WORK, ["sqlite-lock"], config, PORTS)
    print("\n" + format_table([row]))
    assert row.offered == 6 and row.answered == 6, format_table([row])
    assert row.lost == [] and row.duplicated == [], format_table([row])
    assert row.cases_written == 6, format_table([row])
    assert row.reached_agent == 6, format_table([row])
    assert row.callbacks_twice == [], format_table([row])
    assert row.healthy_after_s is not None and row.healthy_after_s <= 10.0, format_table([row])
