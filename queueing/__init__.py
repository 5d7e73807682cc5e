"""Queues, agents and the live state of calls: AMI events in, Redis state and call records out."""
from .agents import (
                     PAUSE_REASONS,
                     Agent,
                     AgentError,
                     AgentNotApplied,
                     AgentNotFound,
                     AgentService,
                     AgentStore,
                     PjsipAgentProvisioner,
                     parse_skills,
)
from .call_tracker import CallEndHook, CallTracker, CaseProgress
from .callbacks import Callback, CallbackDispatcher, CallbackRoute, CallbackStore
from .event_guard import AmiEventGuard
from .live_call import CallState, LiveCall, LiveCallFields
from .live_state import LiveCallState, connect_redis
from .max_wait import QueueTimeoutRoute
from .max_wait_recording import MaxWaitRecordingRoute
from .metrics import QueueFigures, QueueMetricsStore
from .priority import PriorityPolicy, QueueEntryRoute
from .queue_console import QueueConsole
from .queue_live import QueueEventTracker, QueueLiveState
from .records import CallRecord, CallRecordStore, DurableCallRecords
from .wait_announcements import QueueWaitAnnouncer, QueueWaitModel, SpokenPrompts, WaitEstimator

__all__ = [
    "PAUSE_REASONS", "Agent", "AgentError", "AgentNotApplied", "AgentNotFound", "AgentService", "AgentStore",
    "CallEndHook", "Callback", "CallbackDispatcher", "CallbackRoute", "CallbackStore", "CallRecord", "CallRecordStore",
    "CallState", "CallTracker", "CaseProgress", "DurableCallRecords",
    "LiveCall", "LiveCallFields", "LiveCallState", "PjsipAgentProvisioner", "PriorityPolicy", "QueueConsole",
    "QueueEntryRoute", "QueueEventTracker", "QueueFigures", "QueueLiveState", "MaxWaitRecordingRoute",
    "QueueMetricsStore", "QueueTimeoutRoute", "QueueWaitAnnouncer", "WaitEstimator", "connect_redis", "parse_skills",
    "QueueWaitModel", "SpokenPrompts", "AmiEventGuard",
]
