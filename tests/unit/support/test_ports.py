"""The test port helper: one block per module, the same on every run, none shared, all below the kernel's
ephemeral range; an offset shifts them; blocks that cannot fit are a clear one-line error."""
from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from tests.support import ports
from tests.support.ports import BLOCK_SIZE, PortBlockError, ephemeral_start, module_ports


def test_each_module_has_its_own_block_below_the_ephemeral_range() -> None:
    blocks = [module_ports(name) for name in ports._modules()]
    starts = [b.start for b in blocks]
    assert len(set(starts)) == len(starts)
    assert all(b.stop - b.start == BLOCK_SIZE for b in blocks)
    assert sorted(starts) == starts and all(b - a == BLOCK_SIZE for a, b in pairwise(starts))
    assert max(b.stop for b in blocks) <= ephemeral_start()
    assert module_ports(__name__) == module_ports(__name__)  # the same block every time


def test_a_hotline_fits_inside_its_block() -> None:
    block = module_ports(__name__)
    rtp_start, rtp_end = block.rtp_range()
    named = [block.hotline(n) for n in ports.HOTLINE_LAYOUT]
    spare = [block.spare(i) for i in range(BLOCK_SIZE - ports.FREE_FROM)]
    used = [*range(rtp_start, rtp_end + 1), *named, *spare]
    assert len(set(used)) == len(used) and block.start <= min(used) and max(used) < block.stop
    with pytest.raises(IndexError, match="outside"):
        block.spare(BLOCK_SIZE - ports.FREE_FROM)


def test_the_offset_shifts_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    before = module_ports(__name__).start
    monkeypatch.setenv(ports.OFFSET_VARIABLE, "-1000")
    assert module_ports(__name__).start == before - 1000
    monkeypatch.setenv(ports.OFFSET_VARIABLE, "a lot")
    with pytest.raises(PortBlockError, match=r"^HOTLINE_TEST_PORT_OFFSET must be an integer number of ports, got "):
        module_ports(__name__)


def test_blocks_that_would_reach_the_ephemeral_range_are_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = tmp_path / "ip_local_port_range"
    kernel.write_text("21000\t60999\n")
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", kernel)
    assert ephemeral_start() == 21000
    with pytest.raises(PortBlockError, match=r"inside the kernel's ephemeral range \(from 21000") as refused:
        module_ports(__name__)
    assert "\n" not in str(refused.value)
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", tmp_path / "missing")
    assert ephemeral_start() == 32768  # Linux's default where the file cannot be read


def test_only_modules_under_tests_get_ports() -> None:
    with pytest.raises(PortBlockError, match="is not a module under"):
        module_ports("somewhere.else")
