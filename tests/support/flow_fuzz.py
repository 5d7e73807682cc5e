"""Generated malformed flow documents (Hypothesis): a valid small flow broken in one or more places, and YAML
that is hostile as text (deep nesting, huge numbers, impossible dates, alias bombs, odd tags and paths)."""
from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.support.api_fuzz import huge_text, nasty_text


def base_flow() -> dict[str, Any]:
    """A small valid flow using every branching kind, to break."""
    return {
        "name": "fuzz", "start": "welcome", "default_language": "ko",
        "languages": {"ko": {"voice": "ko", "asr_model": "default",
                             "prompts": {"hi": "안녕하세요 {hotline_number}", "menu": "메뉴", "bye": "안녕히"}}},
        "nodes": {
            "welcome": {"kind": "play", "prompt": "hi", "next": "hours", "barge_in": "menu"},
            "hours": {"kind": "hours", "timezone": "Asia/Seoul", "weekly": {"mon": ["09:00-18:00"]},
                      "holidays": ["2026-01-01"], "open": "menu", "closed": "bye"},
            "menu": {"kind": "menu", "prompt": "menu", "fallback": "0", "speech": True, "timeout_seconds": 5,
                     "retries": 2, "options": [
                         {"key": "1", "keywords": {"ko": ["버스"]}, "next": "record"},
                         {"key": "2", "next": "status"},
                         {"key": "0", "next": "operator"}]},
            "record": {"kind": "record", "prompt": "hi", "next": "set", "max_seconds": 60, "silence_seconds": 3},
            "set": {"kind": "set", "category": "complaint", "priority": 2, "next": "operator"},
            "status": {"kind": "case_status", "prompt": "menu", "not_found_prompt": "bye",
                       "status_prompts": {"open": "hi"}, "next": "bye"},
            "operator": {"kind": "queue", "queue": "operator", "max_wait_seconds": 60},
            "bye": {"kind": "hangup", "prompt": "bye"},
        },
    }


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**30, -(10**30), 2**63, -1, 0]),
    st.floats(), nasty_text, huge_text.map(lambda s: s[:5000]),
    st.sampled_from(["file:/etc/passwd", "file:../../../../etc/passwd", "file:" + "a" * 5000,
                     "file:" + "a/" * 3000, "file:~nobody-here/x", "file:~" + "a" * 300 + "/x", "file:a\x00b",
                     "file:", "file:\ud800", "-f/etc/hostname", "Asia", "../../etc/localtime", "/etc/localtime",
                     "a" * 5000, "25:00-26:00", "09:00-18:00", "2026-13-45"]),
)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(nasty_text | st.integers(), inner, max_size=3), max_leaves=8)


@st.composite
def broken_flow(draw: Any) -> dict[str, Any]:
    """The base flow with 1-3 places replaced by any value, deleted, or given an extra key."""
    flow = copy.deepcopy(base_flow())
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(flow) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = flow
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
        if action == "replace":
            parent[path[-1]] = draw(yaml_values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(nasty_text | st.integers())] = draw(yaml_values)
        else:
            parent.append(draw(yaml_values))
    return flow


def _dump(flow: dict[str, Any]) -> str:
    try:
        return yaml.safe_dump(flow, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, UnicodeError):
        return yaml.safe_dump(flow, allow_unicode=False, sort_keys=False)


def alias_bomb(levels: int, where: str) -> str:
    """A flow whose node field is an alias of an alias … of 9 items (9**levels items once expanded)."""
    lines = ["name: fuzz", "start: a", "default_language: ko", "languages: {ko: {voice: ko, prompts: {p: hi}}}",
             "nodes:", "  x0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"  x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    top = f"*l{levels - 1}"
    node = {"kind": f"{{kind: {top}}}", "prompt": f"{{kind: play, prompt: {top}, next: a}}",
            "next": f"{{kind: goto, next: {top}}}", "options": f"{{kind: menu, prompt: p, options: {top}}}",
            "weekly": f"{{kind: hours, timezone: UTC, weekly: {{mon: {top}}}, open: a, closed: a}}"}[where]
    return "\n".join([*lines, f"  a: {node}", ""])


raw_flow_texts = st.one_of(
    st.sampled_from([200, 2000, 20_000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([200, 2000, 10_000]).map(lambda n: "a: " + "{b: " * n + "1" + "}" * n),
    st.sampled_from([200, 2000]).map(lambda n: "- " * n + "x"),
    st.sampled_from([4301, 5000, 20_000]).map(lambda n: "name: fuzz\nx: " + "1" * n + "\n"),
    st.sampled_from(["2026-13-45", "2026-02-30", "2026-02-28 25:99:99", "0000-01-01", "2026-1-1 1:1:1.9999999999",
                     "2026-02-28T10:00:00+99:99"]).map(lambda d: f"name: fuzz\ndescription: {d}\n"),
    st.sampled_from(["!!python/object:os.system ls", "!!binary 'x'", "!!set {a, b}", "!!omap [a, b]",
                     "!!float nope", "!!int nope", "!!timestamp nope", "!!str [a]", "!<tag:x> y", "<<: 5",
                     "*undefined", "&a [*a]", "? [a, b]\n: c", "!!binary " + "A" * 4 + "=" * 3]).map(
        lambda v: f"name: fuzz\ndescription: {v}\n"),
    st.tuples(st.integers(3, 8), st.sampled_from(["kind", "prompt", "next", "options", "weekly"])).map(
        lambda t: alias_bomb(*t)),
    st.sampled_from(["", " ", "\x00", "\ufeffname: x", "\t- a", "---\n---\n", "...", "%YAML 9.9\n---\na: 1",
                     "a: b: c", "\x85\u2028\u2029", "name: \ud800", "[", "{", "'", "\"\\", "- - - -",
                     "name: fuzz\nnodes: [" + "1," * 5000 + "]"]),
    st.text(max_size=200),
)


@st.composite
def flow_yaml_texts(draw: Any) -> str:
    """A malformed flow as YAML text: a broken valid flow, or hostile text."""
    if draw(st.integers(0, 2)):
        return _dump(draw(broken_flow()))
    return draw(raw_flow_texts)
