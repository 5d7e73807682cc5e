"""Server-side HTML for the console: templates from the package, rows rendered by one function each.

Each row/panel renderer is also used with empty data to produce the <template> the JS clones, so the
markup exists in one place; the JS fills `data-field` elements with the same formatting rules.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any

from identity import Account, Role

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

LIVE_STATES = ("ivr", "queued", "ringing", "connected")
STATE_LABELS = {"ivr": "In IVR", "queued": "Queued", "ringing": "Ringing", "connected": "Connected"}
NOTE_MAX_LENGTH = 2000


def load_templates() -> dict[str, Template]:
    """Read the page templates shipped in the package."""
    return {p.stem: Template(p.read_text(encoding="utf-8")) for p in TEMPLATE_DIR.glob("*.html")}


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _local_time(value: Any) -> datetime | None:
    # Stored times are UTC; staff read them in local time (the browser does the same in console.js).
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment.astimezone() if moment.tzinfo is not None else moment


def fmt(value: Any, kind: str = "text") -> str:
    """Display text of a value; keep in step with fmt() in static/console.js."""
    if value is None or value == "" or value == []:
        return "" if kind == "notes" else "—"
    if kind == "list" and isinstance(value, (list, tuple)):
        return " › ".join(str(v) for v in value)
    if kind in ("datetime", "time"):
        moment = _local_time(value)
        if moment is None:
            return str(value)
        return moment.strftime("%Y-%m-%d %H:%M:%S" if kind == "datetime" else "%H:%M:%S")
    if kind == "state":
        return STATE_LABELS.get(str(value), str(value))
    if kind == "seconds":
        try:
            total = int(float(value))
        except (TypeError, ValueError):
            return str(value)
        return f"{total // 60}:{total % 60:02d}"
    return str(value)


def field(tag: str, data: Mapping[str, Any], name: str, kind: str = "text", cls: str = "") -> str:
    """One element whose text the JS can refresh: <tag data-field=name data-format=kind>text</tag>."""
    value = _lookup(data, name)
    classes = cls
    if kind == "state":
        classes = f"{cls} state state-{escape(str(value or 'none'))}".strip()
    class_attr = f' class="{classes}"' if classes else ""
    return (
        f'<{tag}{class_attr} data-field="{escape(name)}" data-format="{kind}">'
        f"{escape(fmt(value, kind))}</{tag}>"
    )


def note_form(case_number: str, csrf: str) -> str:
    """The add-a-note form (JS posts it as JSON; without JS it is a plain form post)."""
    action = f"/api/cases/{escape(case_number)}/notes" if case_number else ""
    return (
        f'<form class="note-form" method="post" action="{action}">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
        f'<input type="text" name="note" maxlength="{NOTE_MAX_LENGTH}" placeholder="Add a note" '
        f'aria-label="Note" required autocomplete="off">'
        f'<button type="submit">Add note</button><span class="form-status" role="status"></span></form>'
    )


def case_row(case: Mapping[str, Any], *, csrf: str, can_write: bool) -> str:
    """One row of the recent-cases table."""
    number = str(case.get("case_number") or "")
    notes_cell = field("pre", case, "notes", "notes", "notes")
    if can_write:
        notes_cell += note_form(number, csrf)
    return (
        f'<tr class="case-row" data-case-number="{escape(number)}" id="case-{escape(number)}">'
        f'<td>{field("span", case, "case_number", cls="mono strong")}</td>'
        f'<td>{field("span", case, "created_at", "datetime", "nowrap")}</td>'
        f'<td>{field("span", case, "caller_number", cls="mono")}</td>'
        f'<td>{field("span", case, "category")}<br>{field("small", case, "menu_path", "list", "muted")}</td>'
        f'<td>{field("span", case, "priority")}</td>'
        f'<td>{field("span", case, "status", cls="pill")}</td>'
        f'<td class="transcript-cell">{field("span", case, "transcript")}</td>'
        f'<td class="notes-cell">{notes_cell}</td>'
        f"</tr>"
    )


def live_row(call: Mapping[str, Any]) -> str:
    """One row of the live-calls table."""
    return (
        f'<tr data-linkedid="{escape(str(call.get("linkedid") or ""))}">'
        f'<td>{field("span", call, "state", "state")}</td>'
        f'<td>{field("span", call, "caller_number", cls="mono")}</td>'
        f'<td>{field("span", call, "ivr_path", "list")}</td>'
        f'<td>{field("span", call, "category")}</td>'
        f'<td class="transcript-cell">{field("span", call, "transcript")}</td>'
        f'<td>{field("span", call, "queue")}</td>'
        f'<td>{field("span", call, "agent", cls="mono")}</td>'
        f'<td>{field("span", call, "started_at", "time", "nowrap")}</td>'
        f'<td>{field("span", call, "case_number", cls="mono")}</td>'
        f"</tr>"
    )


def screen_pop(pop: Mapping[str, Any] | None, *, csrf: str) -> str:
    """The agent's current call with its case: who is calling, what they chose and said."""
    data: Mapping[str, Any] = pop or {"call": {}, "case": None}
    call = data.get("call") or {}
    case = data.get("case") or {}
    number = str(case.get("case_number") or call.get("case_number") or "")
    notes = ""
    if case or pop is None:  # pop None: the <template> the JS clones, which needs the notes part
        notes = (
            '<div class="pop-notes"><h3>Case notes</h3>'
            f'{field("pre", data, "case.notes", "notes", "notes")}{note_form(number, csrf)}</div>'
        )
    return (
        f'<div class="pop" data-linkedid="{escape(str(call.get("linkedid") or ""))}" '
        f'data-case-number="{escape(number)}">'
        f'<div class="pop-head">{field("span", data, "call.caller_number", cls="caller mono")}'
        f'{field("span", data, "call.state", "state")}'
        f'<span class="muted">Case</span> {field("span", data, "call.case_number", cls="mono strong")}</div>'
        '<dl class="pop-facts">'
        f'<dt>Category</dt><dd>{field("span", data, "call.category")}</dd>'
        f'<dt>IVR path</dt><dd>{field("span", data, "call.ivr_path", "list")}</dd>'
        f'<dt>Queue</dt><dd>{field("span", data, "call.queue")}</dd>'
        f'<dt>Started</dt><dd>{field("span", data, "call.started_at", "time")}</dd>'
        f'<dt>Priority</dt><dd>{field("span", data, "case.priority")}</dd>'
        "</dl>"
        f'<h3>Transcript</h3>{field("p", data, "call.transcript", cls="transcript")}'
        f"{notes}</div>"
    )


def record_row(record: Mapping[str, Any]) -> str:
    """One row of the recent-calls (call records) table."""
    return (
        "<tr>"
        f'<td>{field("span", record, "started_at", "datetime", "nowrap")}</td>'
        f'<td>{field("span", record, "caller_number", cls="mono")}</td>'
        f'<td>{field("span", record, "ivr_path", "list")}</td>'
        f'<td>{field("span", record, "queue")}</td>'
        f'<td>{field("span", record, "queue_wait_seconds", "seconds")}</td>'
        f'<td>{field("span", record, "agent", cls="mono")}</td>'
        f'<td>{field("span", record, "talk_seconds", "seconds")}</td>'
        f'<td>{field("span", record, "outcome", cls="pill")}</td>'
        f'<td>{field("span", record, "case_number", cls="mono")}</td>'
        "</tr>"
    )


def account_row(account: Mapping[str, Any]) -> str:
    """One row of the accounts table."""
    return (
        "<tr>"
        f'<td>{field("span", account, "username", cls="mono")}</td>'
        f'<td>{field("span", account, "display_name")}</td>'
        f'<td>{field("span", account, "role", cls="pill")}</td>'
        f'<td>{field("span", account, "sip_endpoint", cls="mono")}</td>'
        f'<td>{"yes" if account.get("active") else "no"}</td>'
        f'<td>{field("span", account, "created_at", "datetime", "nowrap")}</td>'
        "</tr>"
    )


def _rows(items: Sequence[Mapping[str, Any]] | None, render: Any, colspan: int, empty: str) -> str:
    if items is None:
        return f'<tr class="empty"><td colspan="{colspan}">Not available right now.</td></tr>'
    if not items:
        return f'<tr class="empty"><td colspan="{colspan}">{escape(empty)}</td></tr>'
    return "".join(render(item) for item in items)


def _section(tpl: Template, /, **values: str) -> str:
    return tpl.substitute(values)


def render_login(templates: dict[str, Template], *, csrf: str, css_url: str, error: str = "",
                 username: str = "", next_url: str = "/") -> str:
    """The login page."""
    return templates["login"].substitute(
        css_url=escape(css_url),
        csrf=escape(csrf),
        error=f'<p class="error" role="alert">{escape(error)}</p>' if error else "",
        username=escape(username),
        next_url=escape(next_url),
    )


def render_console(
    templates: dict[str, Template],
    *,
    account: Account,
    csrf: str,
    css_url: str,
    js_url: str,
    live_calls: list[dict[str, Any]] | None,
    pop: dict[str, Any] | None,
    cases: list[dict[str, Any]] | None,
    records: list[dict[str, Any]] | None,
    accounts: list[dict[str, Any]] | None,
) -> str:
    """The console page for this account's role (department: cases only, read-only)."""
    console_role = account.role != Role.DEPARTMENT
    parts: list[str] = []
    if console_role and account.sip_endpoint:
        body = screen_pop(pop, csrf=csrf) if pop else (
            f'<p class="muted">No call connected to {escape(account.sip_endpoint)} right now.</p>'
        )
        parts.append(_section(
            templates["section_pop"],
            endpoint=escape(account.sip_endpoint),
            body=body,
            template=screen_pop(None, csrf=csrf),
        ))
    if console_role:
        parts.append(_section(
            templates["section_live"],
            count=str(len(live_calls or [])),
            rows=_rows(live_calls, live_row, 9, "No calls in progress."),
            template=live_row({}),
        ))
    parts.append(_section(
        templates["section_cases"],
        rows=_rows(cases, lambda c: case_row(c, csrf=csrf, can_write=console_role), 8, "No cases yet."),
        template=case_row({}, csrf=csrf, can_write=console_role),
    ))
    if console_role:
        parts.append(_section(
            templates["section_records"],
            rows=_rows(records, record_row, 9, "No finished calls yet."),
        ))
    if account.role == Role.ADMIN:
        parts.append(_section(
            templates["section_accounts"],
            rows=_rows(accounts, account_row, 6, "No accounts."),
            csrf=escape(csrf),
            roles="".join(f'<option value="{r.value}">{r.value}</option>' for r in Role),
        ))
    return templates["console"].substitute(
        css_url=escape(css_url),
        js_url=escape(js_url),
        csrf=escape(csrf),
        display_name=escape(account.display_name),
        username=escape(account.username),
        role=escape(str(account.role)),
        live="1" if console_role else "0",
        sip_endpoint=escape(account.sip_endpoint or ""),
        agents_link=(f'<a href="/agents" id="agents-link">{"My queue state" if account.role == Role.AGENT else "Agents"}'
                     "</a> · ") if console_role else "",
        flows_link='<a href="/flows" id="flows-link">IVR flows</a> · ' if account.role == Role.ADMIN else "",
        sections="".join(parts),
    )


# --- queue agents (/agents) -------------------------------------------------------------------------

AGENT_STATE_LABELS = {
    "logged_out": "logged out", "available": "available", "ringing": "ringing", "on_call": "on call",
    "wrap_up": "wrap-up", "paused": "paused", "unreachable": "unreachable",
}
AGENT_ACTION_LABELS = (("login", "Log in"), ("pause", "Pause"), ("resume", "Resume"), ("logout", "Log out"))


def reason_label(reason: Any) -> str:
    """'case_work' -> 'case work'."""
    return str(reason).replace("_", " ")


def _agent_state(agent: Mapping[str, Any]) -> str:
    return str(agent.get("state") or "logged_out")


def agent_actions(agent: Mapping[str, Any]) -> frozenset[str]:
    """The controls that make sense in the agent's state; keep in step with allowedActions() in static/agents.js.

    The database says what was asked (logged_in, paused); the live state what Asterisk does. Where they
    disagree (the change did not reach Asterisk) the command that would apply it again stays offered.
    """
    if not agent.get("name"):
        return frozenset()
    state = _agent_state(agent)
    if not agent.get("logged_in"):
        return frozenset({"login", "logout"} if state != "logged_out" else {"login"})
    actions = {"logout", "resume" if agent.get("paused") else "pause"}
    if state == "logged_out":
        actions.add("login")
    return frozenset(actions)


def agent_fields(agent: Mapping[str, Any]) -> dict[str, str]:
    """Display text of an agent's fields; keep in step with agentFields() in static/agents.js."""
    state = _agent_state(agent)
    reason = agent.get("live_pause_reason") or agent.get("pause_reason")
    paused = state == "paused" or bool(agent.get("paused"))
    label = AGENT_STATE_LABELS.get(state, state.replace("_", " "))
    if state == "paused" and reason:
        label = f"{label} ({reason_label(reason)})"
    pending = ""
    if agent.get("logged_in") and state == "logged_out":
        pending = "log-in not applied in Asterisk yet"
    elif not agent.get("logged_in") and state != "logged_out":
        pending = "log-out not applied in Asterisk yet"
    elif agent.get("paused") and state == "available":
        pending = "pause not applied in Asterisk yet"
    elif agent.get("logged_in") and not agent.get("paused") and state == "paused":
        pending = "resume not applied in Asterisk yet"
    since = "—"
    if agent.get("state_since") not in (None, ""):
        try:
            since = datetime.fromtimestamp(float(agent["state_since"])).strftime("%H:%M:%S")
        except (TypeError, ValueError, OverflowError, OSError):
            since = "—"
    skills = agent.get("skills") or {}
    return {
        "name": str(agent.get("name") or ""),
        "display_name": str(agent.get("display_name") or ""),
        "state": label,
        "pending": pending,
        "pause_reason": reason_label(reason) if paused and reason else "—",
        "queues": ", ".join(sorted(skills)) if skills else "—",
        "since": since,
    }


def _agent_field(tag: str, texts: Mapping[str, str], name: str, cls: str = "") -> str:
    class_attr = f' class="{cls}"' if cls else ""
    return f'<{tag}{class_attr} data-agent-field="{name}">{escape(texts[name])}</{tag}>'


def _agent_state_badge(agent: Mapping[str, Any], texts: Mapping[str, str]) -> str:
    state = escape(_agent_state(agent)) if agent.get("name") else "none"
    return (f'<span class="state agent-state agent-state-{state}" data-agent-field="state">'
            f'{escape(texts["state"])}</span> {_agent_field("small", texts, "pending", "pending")}')


def agent_controls(agent: Mapping[str, Any], *, csrf: str, reasons: Sequence[str]) -> str:
    """Log in / Pause (with a reason) / Resume / Log out for one agent, only the sensible ones enabled.

    A form posting to /api/agents/{name}/{action} (the JS sends it as JSON; without JS it is a form post).
    """
    name = str(agent.get("name") or "")
    enabled = agent_actions(agent)
    base = f"/api/agents/{escape(name)}/" if name else ""
    options = "".join(f'<option value="{escape(r)}">{escape(reason_label(r))}</option>' for r in reasons)
    pause_off = "" if "pause" in enabled else " disabled"
    parts = [f'<form class="agent-actions" method="post" action="{base}login">'
             f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">']
    for action, text in AGENT_ACTION_LABELS:
        if action == "pause":
            parts.append(f'<select name="reason" aria-label="Pause reason"{pause_off}>{options}</select>')
        off = "" if action in enabled else " disabled"
        parts.append(f'<button type="submit" data-action="{action}" formaction="{base}{action}"{off}>'
                     f"{text}</button>")
    parts.append("</form>")
    return "".join(parts)


def agent_panel(agent: Mapping[str, Any], *, csrf: str, reasons: Sequence[str]) -> str:
    """The signed-in agent's own queue state, queues and controls."""
    texts = agent_fields(agent)
    return (
        f'<div class="agent agent-panel" data-agent="{escape(texts["name"])}">'
        f'<p class="agent-state-line">{_agent_state_badge(agent, texts)}</p>'
        '<dl class="pop-facts">'
        f'<dt>Agent</dt><dd>{_agent_field("span", texts, "display_name")} '
        f'{_agent_field("span", texts, "name", "mono muted")}</dd>'
        f'<dt>Queues</dt><dd>{_agent_field("span", texts, "queues")}</dd>'
        f'<dt>Since</dt><dd>{_agent_field("span", texts, "since")}</dd>'
        "</dl>"
        f"{agent_controls(agent, csrf=csrf, reasons=reasons)}</div>"
    )


def agent_row(agent: Mapping[str, Any], *, csrf: str, reasons: Sequence[str]) -> str:
    """One row of the supervisors' all-agents table."""
    texts = agent_fields(agent)
    return (
        f'<tr class="agent" data-agent="{escape(texts["name"])}">'
        f'<td>{_agent_field("span", texts, "name", "mono strong")}<br>'
        f'{_agent_field("small", texts, "display_name", "muted")}</td>'
        f"<td>{_agent_state_badge(agent, texts)}</td>"
        f'<td>{_agent_field("span", texts, "pause_reason")}</td>'
        f'<td>{_agent_field("span", texts, "queues")}</td>'
        f'<td>{_agent_field("span", texts, "since", "nowrap")}</td>'
        f"<td>{agent_controls(agent, csrf=csrf, reasons=reasons)}</td>"
        "</tr>"
    )


def render_agents(
    templates: dict[str, Template],
    *,
    account: Account,
    csrf: str,
    css_url: str,
    agents_css_url: str,
    js_url: str,
    agents: list[dict[str, Any]] | None,
    mine: dict[str, Any] | None,
    supervisor: bool,
    pause_reasons: Sequence[str],
    error: str = "",
) -> str:
    """The /agents page: your own queue state and controls; supervisors also every agent's."""
    parts: list[str] = []
    if mine is not None:
        parts.append(
            '<section class="card agent-card" id="my-queue-state"><h2>Your queue state</h2>'
            f"{agent_panel(mine, csrf=csrf, reasons=pause_reasons)}</section>"
        )
    elif not supervisor and agents is not None:
        linked = account.sip_endpoint or account.username
        parts.append(
            '<section class="card agent-card" id="my-queue-state"><h2>Your queue state</h2>'
            f'<p class="muted">No queue agent named {escape(linked)}: ask an admin to add you as an agent.</p>'
            "</section>"
        )
    if supervisor:
        parts.append(
            '<section class="card" id="all-agents"><h2>All agents <span class="count" id="agent-count">'
            f'{len(agents or [])}</span></h2><div class="table-wrap"><table class="grid agents-table">'
            "<thead><tr><th>Agent</th><th>State</th><th>Pause reason</th><th>Queues</th><th>Since</th>"
            "<th>Controls</th></tr></thead>"
            f'<tbody id="agent-rows">{_rows(agents, lambda a: agent_row(a, csrf=csrf, reasons=pause_reasons), 6, "No agents.")}'
            "</tbody></table></div>"
            f'<template id="agent-row-template">{agent_row({}, csrf=csrf, reasons=pause_reasons)}</template>'
            "</section>"
        )
    return templates["agents"].substitute(
        css_url=escape(css_url),
        agents_css_url=escape(agents_css_url),
        js_url=escape(js_url),
        csrf=escape(csrf),
        display_name=escape(account.display_name),
        username=escape(account.username),
        role=escape(str(account.role)),
        own_agent=escape(str((mine or {}).get("name") or "")),
        supervisor="1" if supervisor else "0",
        error=escape(error),
        error_hidden="" if error else " hidden",
        sections="".join(parts),
    )
