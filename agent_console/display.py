"""How the console shows values: labels, time formats, agent states and controls, each defined once here.

The pages use these as Jinja2 filters and globals; the browser gets the same rules as JSON embedded in every page
(`rules()`, read by static/display.js), so live updates show exactly what a page load shows.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

EMPTY: Final = "—"
LIST_SEPARATOR: Final = " › "
QUEUE_SEPARATOR: Final = ", "
# strftime patterns; display.js understands %Y %m %d %H %M %S.
DATETIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
TIME_FORMAT: Final = "%H:%M:%S"
# What is read as a moment: an ISO 8601 date and time (a bare number or date stays as it is).
DATETIME_PATTERN: Final = r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d"

LIVE_STATE_LABELS: Final[Mapping[str, str]] = {
    "ivr": "In IVR", "queued": "Queued", "ringing": "Ringing", "connected": "Connected",
}
AGENT_STATE_LABELS: Final[Mapping[str, str]] = {
    "logged_out": "logged out", "available": "available", "ringing": "ringing", "on_call": "on call",
    "wrap_up": "wrap-up", "paused": "paused", "unreachable": "unreachable",
}
# Button order on the page is this order.
AGENT_ACTION_LABELS: Final[Mapping[str, str]] = {
    "login": "Log in", "pause": "Pause", "resume": "Resume", "logout": "Log out",
}
PAUSED_STATE_LABEL: Final = "{state} ({reason})"

# A rule applies when every condition of its "when" holds: "logged_in"/"paused" compare the database record's flag,
# "state"/"state_not" the live state (what Asterisk does; missing means logged_out).
# Where the two disagree the change did not reach Asterisk: the first matching pending rule says so.
PENDING_RULES: Final = (
    {"when": {"logged_in": True, "state": "logged_out"}, "text": "log-in not applied in Asterisk yet"},
    {"when": {"logged_in": False, "state_not": "logged_out"}, "text": "log-out not applied in Asterisk yet"},
    {"when": {"paused": True, "state": "available"}, "text": "pause not applied in Asterisk yet"},
    {"when": {"logged_in": True, "paused": False, "state": "paused"}, "text": "resume not applied in Asterisk yet"},
)
# The controls offered are the union of every matching rule's actions; a command that would apply a change
# Asterisk has not seen yet stays offered.
ACTION_RULES: Final = (
    {"when": {"logged_in": False}, "actions": ["login"]},
    {"when": {"logged_in": False, "state_not": "logged_out"}, "actions": ["logout"]},
    {"when": {"logged_in": True}, "actions": ["logout"]},
    {"when": {"logged_in": True, "paused": False}, "actions": ["pause"]},
    {"when": {"logged_in": True, "paused": True}, "actions": ["resume"]},
    {"when": {"logged_in": True, "state": "logged_out"}, "actions": ["login"]},
)


def rules() -> dict[str, Any]:
    """Every display rule as JSON-ready data: what the page embeds for display.js."""
    return {
        "empty": EMPTY,
        "list_separator": LIST_SEPARATOR,
        "queue_separator": QUEUE_SEPARATOR,
        "datetime_format": DATETIME_FORMAT,
        "time_format": TIME_FORMAT,
        "datetime_pattern": DATETIME_PATTERN,
        "live_state_labels": dict(LIVE_STATE_LABELS),
        "agent_state_labels": dict(AGENT_STATE_LABELS),
        "agent_action_labels": dict(AGENT_ACTION_LABELS),
        "paused_state_label": PAUSED_STATE_LABEL,
        "pending_rules": [dict(rule) for rule in PENDING_RULES],
        "action_rules": [dict(rule) for rule in ACTION_RULES],
    }


def lookup(data: Any, dotted: str) -> Any:
    """data["a"]["b"] for "a.b", None where a part is missing."""
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _local_time(value: Any) -> datetime | None:
    # Stored times are UTC; staff read them in local time (the browser does the same).
    if isinstance(value, datetime):
        moment = value
    elif not re.match(DATETIME_PATTERN, str(value)):
        return None
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment.astimezone() if moment.tzinfo is not None else moment


def fmt(value: Any, kind: str = "text") -> str:
    """Display text of a value of one kind: text, notes, list, datetime, time, state (of a live call), seconds."""
    if value is None or value == "" or value == []:
        return "" if kind == "notes" else EMPTY
    if isinstance(value, (list, tuple)):  # whatever the kind: an IVR path, a menu path
        return LIST_SEPARATOR.join(str(v) for v in value)
    if kind in ("datetime", "time"):
        moment = _local_time(value)
        if moment is None:
            return str(value)
        return moment.strftime(DATETIME_FORMAT if kind == "datetime" else TIME_FORMAT)
    if kind == "state":
        return LIVE_STATE_LABELS.get(str(value), str(value))
    if kind == "seconds":
        try:
            total = int(float(value))
        except (TypeError, ValueError):
            return str(value)
        return f"{total // 60}:{total % 60:02d}"
    return str(value)


def reason_label(reason: Any) -> str:
    """A pause reason as words: 'case_work' -> 'case work'."""
    return str(reason).replace("_", " ")


def agent_state(agent: Mapping[str, Any]) -> str:
    """The agent's live state; none reported means logged out."""
    return str(agent.get("state") or "logged_out")


def _applies(rule: Mapping[str, Any], agent: Mapping[str, Any]) -> bool:
    state = agent_state(agent)
    for key, wanted in rule["when"].items():
        if key == "state":
            holds = state == wanted
        elif key == "state_not":
            holds = state != wanted
        else:
            holds = bool(agent.get(key)) == wanted
        if not holds:
            return False
    return True


def agent_actions(agent: Mapping[str, Any]) -> frozenset[str]:
    """The controls that make sense for the agent (ACTION_RULES); none for a nameless one (the row template)."""
    if not agent.get("name"):
        return frozenset()
    return frozenset(action for rule in ACTION_RULES if _applies(rule, agent) for action in rule["actions"])


def _clock(epoch: Any) -> str:
    if epoch in (None, ""):
        return EMPTY
    try:
        return datetime.fromtimestamp(float(epoch)).strftime(TIME_FORMAT)
    except (TypeError, ValueError, OverflowError, OSError):
        return EMPTY


def agent_fields(agent: Mapping[str, Any]) -> dict[str, str]:
    """Display text of each of an agent's fields (the page's data-agent-field elements)."""
    state = agent_state(agent)
    reason = agent.get("live_pause_reason") or agent.get("pause_reason")
    paused = state == "paused" or bool(agent.get("paused"))
    label = AGENT_STATE_LABELS.get(state, state.replace("_", " "))
    if state == "paused" and reason:
        label = PAUSED_STATE_LABEL.format(state=label, reason=reason_label(reason))
    pending = next((str(rule["text"]) for rule in PENDING_RULES if _applies(rule, agent)), "")
    skills = agent.get("skills") or {}
    return {
        "name": str(agent.get("name") or ""),
        "display_name": str(agent.get("display_name") or ""),
        "state": label,
        "pending": pending,
        "pause_reason": reason_label(reason) if paused and reason else EMPTY,
        "queues": QUEUE_SEPARATOR.join(sorted(skills)) if skills else EMPTY,
        "since": _clock(agent.get("state_since")),
    }
