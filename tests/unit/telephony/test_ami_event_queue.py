"""The AMI client's event queue is bounded: what overflows is counted and the subscribers are told once."""
from __future__ import annotations

from panoramisk.message import Message

from telephony import AmiClient


def _event(n: int) -> Message:
    return Message([("Event", "Newstate"), ("Linkedid", f"L{n}")])


async def test_a_full_event_queue_drops_counts_and_tells_the_subscribers_once() -> None:
    client = AmiClient("127.0.0.1", 1, "u", "s", max_queued_events=4)
    told: list[str] = []
    client.on_events_lost(lambda: told.append("lost"))
    for n in range(10):
        client.dispatch(_event(n))
    report = client.health_report()
    assert report["events_received"] == 10 and report["events_dropped"] == 6 and report["events_queued"] == 4
    assert told == ["lost"]  # once per overflow, not per dropped event
    # Drained below half, the next overflow is told again.
    for _ in range(4):
        client._events.get_nowait()
    client.dispatch(_event(11))
    for n in range(12, 20):
        client.dispatch(_event(n))
    assert told == ["lost", "lost"]


async def test_a_hook_that_raises_does_not_break_the_protocol_callback() -> None:
    client = AmiClient("127.0.0.1", 1, "u", "s", max_queued_events=1)

    def broken() -> None:
        raise RuntimeError("bug")

    client.on_events_lost(broken)
    client.dispatch(_event(1))
    client.dispatch(_event(2))
    assert client.health.events_dropped == 1
