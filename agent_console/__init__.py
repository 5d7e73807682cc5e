"""Web console for agents, supervisors, department staff and admins: pages, JSON API and /healthz."""
from .accounts import (
    Account,
    AccountExists,
    AccountNotFound,
    AccountStore,
    Role,
    check_password_policy,
    metadata,
)
from .app import ROUTES, create_console_app, describe_routes
from .ports import CallRecordsService, CasesService, HealthCheck, LiveCallsService
from .security import PUBLIC, route_policy

__all__ = [
    "Account",
    "AccountExists",
    "AccountNotFound",
    "AccountStore",
    "CallRecordsService",
    "CasesService",
    "HealthCheck",
    "LiveCallsService",
    "PUBLIC",
    "ROUTES",
    "Role",
    "check_password_policy",
    "create_console_app",
    "describe_routes",
    "metadata",
    "route_policy",
]
