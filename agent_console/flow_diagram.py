"""A flow as an SVG boxes-and-arrows diagram (server-rendered: no scripts, no CDN, fits the console's CSP).

Built as text, not from a template: every name, label and kind from the flow goes through html.escape
(quotes too); everything else is a number or a constant of this module.
"""
from __future__ import annotations

from collections import deque
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivr.flow_model import FlowDocument

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 46, 70, 22, 20
KIND_COLOURS = {
    "play": "#e8f0fe", "menu": "#fff4d6", "record": "#fde7f3", "announce_case": "#e8f0fe",
    "case_status": "#e6f4ea", "hours": "#f1e8fd", "language": "#f1e8fd", "set": "#eeeeee",
    "queue": "#d2f0da", "transfer": "#d2f0da", "callback": "#e6f4ea", "survey": "#e6f4ea",
    "goto": "#eeeeee", "hangup": "#fbd7d4",
}


def _layers(document: FlowDocument) -> list[list[str]]:
    """Nodes by breadth-first distance from the start; unreachable ones in a last column."""
    names = list(document.nodes)
    depth: dict[str, int] = {}
    if document.start in document.nodes:
        depth[document.start] = 0
        queue = deque([document.start])
        while queue:
            name = queue.popleft()
            for target in document.nodes[name].branches().values():
                if target in document.nodes and target not in depth:
                    depth[target] = depth[name] + 1
                    queue.append(target)
    last = max(depth.values(), default=-1) + 1
    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(depth.get(name, last), []).append(name)
    return [columns[k] for k in sorted(columns)]


def render_flow_svg(document: FlowDocument, error_nodes: set[str] | None = None) -> str:
    """The flow's nodes as boxes (kind colour, red border on errors) and its branches as labelled arrows."""
    error_nodes = error_nodes or set()
    layers = _layers(document)
    pos: dict[str, tuple[int, int]] = {}
    for col, layer in enumerate(layers):
        for row, name in enumerate(layer):
            pos[name] = (MARGIN + col * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y))
    width = MARGIN * 2 + max(1, len(layers)) * (BOX_W + GAP_X)
    height = MARGIN * 2 + max((len(layer) for layer in layers), default=1) * (BOX_H + GAP_Y)
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-diagram" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="flow diagram">'),
           ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>')]
    for name, node in document.nodes.items():
        x1, y1 = pos[name]
        for label, target in node.branches().items():
            if target not in pos:
                continue
            x2, y2 = pos[target]
            if target == name:
                sx, sy = x1 + BOX_W - 20, y1
                out.append(f'<path d="M {sx} {sy} C {sx} {sy - 30}, {sx + 40} {sy - 30}, {sx + 20} {sy}" '
                           'fill="none" stroke="#555" marker-end="url(#arrow)"/>')
                continue
            forward = x2 > x1
            sx, sy = (x1 + BOX_W, y1 + BOX_H // 2) if forward else (x1 + BOX_W // 2, y1 + BOX_H)
            ex, ey = (x2, y2 + BOX_H // 2) if forward else (x2 + BOX_W // 2, y2 + BOX_H)
            colour = "#555" if forward else "#b06000"
            out.append(f'<line class="edge" data-from="{escape(name)}" data-to="{escape(target)}" x1="{sx}" '
                       f'y1="{sy}" x2="{ex}" y2="{ey}" stroke="{colour}" marker-end="url(#arrow)"/>')
            out.append(f'<text x="{(sx + ex) // 2}" y="{(sy + ey) // 2 - 3}" font-size="10" fill="{colour}" '
                       f'text-anchor="middle">{escape(label)}</text>')
    for name, node in document.nodes.items():
        x, y = pos[name]
        bad = name in error_nodes
        stroke, stroke_w = ("#c5221f", 3) if bad else ("#444", 1)
        fill = KIND_COLOURS.get(node.kind, "#ffffff")
        start = " (start)" if name == document.start else ""
        out.append(f'<g class="node{" node-error" if bad else ""}" data-node="{escape(name)}">'
                   f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{stroke_w}"/>'
                   f'<text x="{x + 8}" y="{y + 18}" font-size="13" font-weight="bold" fill="#111">'
                   f'{escape(name[:24])}</text>'
                   f'<text x="{x + 8}" y="{y + 36}" font-size="11" fill="#555">{escape(node.kind + start)}'
                   f'{escape(_detail(node))}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _detail(node: Any) -> str:
    if node.kind == "queue":
        return f" → {node.queue}"
    if node.kind == "transfer":
        return f" → {node.number}"
    if node.kind == "menu":
        return f" {''.join(o.key for o in node.options)}{' +speech' if node.speech else ''}"
    if node.kind == "set":
        return f" {node.category or ''}"
    return ""
