"""Queues, agents and the live state of calls: AMI events in, Redis state and call records out."""
from .agents import (PAUSE_REASONS, Agent, AgentError, AgentNotFound, AgentService, AgentStore, PjsipAgentProvisioner,
                     parse_skills)
from .callbacks import Callback, CallbackDispatcher, CallbackRoute, CallbackStore
from .call_tracker import CallObserver, CallTracker
from .live_state import LiveCallState, connect_redis
from .max_wait import QueueTimeoutRoute
from .metrics import QueueFigures, QueueMetricsStore
from .priority import PriorityPolicy, QueueEntryRoute
from .queue_console import QueueConsole
from .queue_live import QueueEventTracker, QueueLiveState
from .records import CallRecord, CallRecordStore

__all__ = ["PAUSE_REASONS", "Agent", "AgentError", "AgentNotFound", "AgentService", "AgentStore", "CallObserver", "Callback", "CallbackDispatcher", "CallbackRoute",
           "CallbackStore",
           "CallRecord", "CallRecordStore", "CallTracker", "LiveCallState", "PjsipAgentProvisioner", "PriorityPolicy",
           "QueueConsole", "QueueEntryRoute", "QueueEventTracker", "QueueFigures", "QueueLiveState",
           "QueueMetricsStore", "QueueTimeoutRoute", "connect_redis", "parse_skills"]
