"""The console's HTML pages: Jinja2 templates from the package (autoescaped), rendered through aiohttp-jinja2.

Every page extends templates/base.html (head, top bar, the display rules as JSON for the page's JavaScript);
rows and panels are macros in templates/macros.html, also rendered empty into the <template> elements the
JavaScript clones, so each piece of markup exists once.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from identity import Role

from . import display
from .security import ACCOUNT_KEY, csrf_token

TEMPLATE_DIR: Final = Path(__file__).resolve().parent / "templates"
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
TEMPLATES: Final = web.AppKey("console_templates", jinja2.Environment)
NOTE_MAX_LENGTH: Final = 2000


def setup_templates(app: web.Application) -> jinja2.Environment:
    """Give the app its template environment: autoescape for .html, display rules as filters and globals."""
    env = aiohttp_jinja2.setup(
        app,
        app_key=TEMPLATES,
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(("html",), default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render instead of showing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=display.fmt, reason_label=display.reason_label)
    env.globals.update(
        lookup=display.lookup,
        agent_fields=display.agent_fields,
        agent_actions=display.agent_actions,
        agent_state=display.agent_state,
        agent_action_labels=display.AGENT_ACTION_LABELS,
        display_rules=display.rules(),
        roles=[role.value for role in Role],
        note_max_length=NOTE_MAX_LENGTH,
    )
    return env


async def render_page(request: web.Request, template: str, context: Mapping[str, Any],
                      status: int = 200) -> web.Response:
    """The page `template` for this request, with the signed-in account (None on public pages) and CSRF token."""
    page = {"account": request.get(ACCOUNT_KEY), "csrf": await csrf_token(request), **context}
    return aiohttp_jinja2.render_template(template, request, page, app_key=TEMPLATES, status=status)
