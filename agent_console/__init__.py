"""Web console for agents, supervisors, department staff and admins: pages, JSON API and /healthz."""
from .app import ROUTES, create_console_app, describe_routes
from .ports import CallRecordsService, CasesService, HealthCheck, LiveCallsService
from .security import PUBLIC, route_policy

__all__ = [
    "PUBLIC",
    "ROUTES",
    "CallRecordsService",
    "CasesService",
    "HealthCheck",
    "LiveCallsService",
    "create_console_app",
    "describe_routes",
    "route_policy",
]
