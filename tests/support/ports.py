"""The one place test ports come from: each test module gets its own block of 100 loopback ports.

Blocks are handed out in the order of the module names under tests/ (so a module's block is the same on every run
and no two modules share one), starting at FIRST_PORT, all below the kernel's ephemeral port range (read from
/proc/sys/net/ipv4/ip_local_port_range): the ports SIPp, clients and `bind(0)` get from the kernel never land in a
test's block, so two test workers never collide and nothing on the machine needs changing. HOTLINE_TEST_PORT_OFFSET
(an integer) shifts every block, e.g. to run a second copy of the suite beside the first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

BLOCK_SIZE = 100
FIRST_PORT = 20000
OFFSET_VARIABLE = "HOTLINE_TEST_PORT_OFFSET"
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TESTS = Path(__file__).resolve().parents[1]

# Where the parts of one `hotline run` sit inside a block (RTP takes the first RTP_PORTS ports).
RTP_PORTS = 50
HOTLINE_LAYOUT = {"asr_ws": 50, "ami": 51, "agi": 52, "sip": 53, "http": 54}
FREE_FROM = 60  # ports from here to the end of the block are the module's own (a SIPp carrier, a Redis, …)


class PortBlockError(RuntimeError):
    """The test port blocks cannot be handed out as asked."""


@dataclass(frozen=True)
class PortBlock:
    """A module's ports: start .. start + size - 1."""

    module: str
    start: int
    size: int = BLOCK_SIZE

    def __getitem__(self, index: int) -> int:
        """The index-th port of the block."""
        if not 0 <= index < self.size:
            raise IndexError(f"port {index} is outside {self.module}'s block of {self.size}")
        return self.start + index

    @property
    def stop(self) -> int:
        """The first port after the block."""
        return self.start + self.size

    def rtp_range(self, count: int = RTP_PORTS, first: int = 0) -> tuple[int, int]:
        """An RTP port range (first, last) inside the block."""
        return self[first], self[first + count - 1]

    def hotline(self, name: str) -> int:
        """The port of one part of a `hotline run` in this block (see HOTLINE_LAYOUT)."""
        return self[HOTLINE_LAYOUT[name]]

    def spare(self, index: int) -> int:
        """The module's own index-th port, after the hotline's (0 .. BLOCK_SIZE - FREE_FROM - 1)."""
        return self[FREE_FROM + index]


def ephemeral_start(path: Path | None = None) -> int:
    """The first port of the kernel's ephemeral range (32768, Linux's default, where it cannot be read)."""
    try:
        return int((path or _EPHEMERAL_RANGE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _offset() -> int:
    raw = os.environ.get(OFFSET_VARIABLE, "0").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise PortBlockError(f"{OFFSET_VARIABLE} must be an integer number of ports, got {raw!r}") from None


@cache
def _modules() -> tuple[str, ...]:
    """Every module under tests/ by dotted name, sorted: a module's place here is its block number."""
    names = []
    for path in _TESTS.rglob("*.py"):
        if path.name in ("__init__.py", "conftest.py"):
            continue
        names.append(".".join(("tests", *path.relative_to(_TESTS).with_suffix("").parts)))
    return tuple(sorted(names))


def module_ports(module: str) -> PortBlock:
    """The block of BLOCK_SIZE ports of this module (pass `__name__`)."""
    modules = _modules()
    if module not in modules:
        raise PortBlockError(f"test ports: {module!r} is not a module under {_TESTS}")
    offset = _offset()
    first = FIRST_PORT + offset
    end = first + len(modules) * BLOCK_SIZE  # every block must fit, not only this one
    limit = ephemeral_start()
    if first < 1024:
        raise PortBlockError(f"test ports: {OFFSET_VARIABLE}={offset} puts the first block at {first}, "
                            "below 1024 (privileged ports)")
    if end > limit:
        raise PortBlockError(
            f"test ports: {len(modules)} blocks of {BLOCK_SIZE} from {first} end at {end - 1}, inside the kernel's "
            f"ephemeral range (from {limit}, {_EPHEMERAL_RANGE}); lower {OFFSET_VARIABLE} or raise that range's start")
    return PortBlock(module, first + modules.index(module) * BLOCK_SIZE)
