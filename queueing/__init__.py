"""Queues, agents and the live state of calls: AMI events in, Redis state and call records out."""
from .call_tracker import CallObserver, CallTracker
from .live_state import LiveCallState, connect_redis
from .records import CallRecord, CallRecordStore

__all__ = ["CallObserver", "CallRecord", "CallRecordStore", "CallTracker", "LiveCallState", "connect_redis"]
