"""FakeCallbacks: the callback requests port (queueing.CallbackStore.request) in memory."""
from __future__ import annotations

from typing import Any


class FakeCallbacks:
    """Remembers requests; refuses numbers it cannot call, as CallbackStore does."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def request(self, **fields: Any) -> Any:
        """Book a callback; returns an object with its id."""
        if not str(fields["caller_number"]).isdigit():
            raise ValueError(f"caller number {fields['caller_number']!r} cannot be called back")
        self.requests.append(fields)
        return type("Booked", (), {"id": len(self.requests)})()
