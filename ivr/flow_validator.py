"""FlowValidator: every reason a flow must not go live, each naming its node, checked before publishing."""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .flow_model import (
    FILE_PREFIX,
    PERSON_KINDS,
    TERMINAL_KINDS,
    FlowDocument,
    HoursNode,
    LanguageNode,
    MenuNode,
    PlayNode,
    one_line,
    parse_flow,
)
from .prompts import (
    HOTLINE_NUMBER_PLACEHOLDER,
    LANGUAGE_CODE,
    LANGUAGE_CODE_RULE,
    PROMPT_NAME,
    PROMPT_NAME_RULE,
    VOICE_NAME,
    VOICE_NAME_RULE,
)

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
SOUND_EXTENSIONS = (".wav", ".gsm", ".ulaw", ".alaw", ".sln")
MAX_PROMPT_TEXT = 2000  # characters; a prompt is a sentence or two, and espeak-ng gets 30 s for it


class Vocabulary(Protocol):
    """What an ASR model can recognize."""

    def missing(self, words: Collection[str]) -> list[str]:
        """The words (of these) the model does not know."""


@dataclass(frozen=True)
class FlowIssue:
    """One error or warning: the node it concerns (None: the whole flow) and a one-line reason."""

    node: str | None
    message: str

    def __post_init__(self) -> None:
        # Messages quote the flow's own values: keep them one short printable line whatever those are.
        object.__setattr__(self, "message", one_line(self.message))
        if self.node is not None:
            object.__setattr__(self, "node", one_line(self.node, 80))

    def __str__(self) -> str:
        return f"node {self.node!r}: {self.message}" if self.node else self.message

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the admin API."""
        return {"node": self.node, "message": self.message, "text": str(self)}


@dataclass
class FlowReport:
    """The outcome of validating one flow document."""

    document: FlowDocument | None
    errors: list[FlowIssue] = field(default_factory=list)
    warnings: list[FlowIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the flow may go live (warnings allowed)."""
        return self.document is not None and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the admin API."""
        return {"ok": self.ok, "errors": [e.to_dict() for e in self.errors],
                "warnings": [w.to_dict() for w in self.warnings]}


def resolve_sound_file(reference: str, base_dir: Path | None) -> Path:
    """The sound file a "file:<path>" prompt reference names (relative paths from base_dir)."""
    path = Path(reference[len(FILE_PREFIX):])
    try:
        path = path.expanduser()
    except RuntimeError:
        pass  # "~someone" with no such user: a plain (relative) name, refused or not found like any other
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def playable_stem(path: Path) -> Path:
    """What Asterisk is told to play for a sound file: the path without its extension (it picks the format)."""
    return path.with_suffix("") if path.suffix else path


def sound_file_exists(path: Path) -> bool:
    """Asterisk plays "x" from x.wav, x.gsm, …: accept the path as given or with a known audio extension."""
    try:
        if path.suffix and path.is_file():
            return True
        return any(path.with_name(path.name + ext).is_file() for ext in SOUND_EXTENSIONS)
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: no such file
        return False


def _inside(real: str, folders: Iterable[Path]) -> bool:
    for folder in folders:
        root = os.path.realpath(folder)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def contained_sound_file(path: Path, folders: Iterable[Path]) -> Path | None:
    """The playable stem (real folder, no extension) of the sound file at path when it exists and every file
    Asterisk could open for it (stem.*, symbolic links followed) lies under one of folders; None otherwise."""
    folders = list(folders)
    if not folders or not sound_file_exists(path):
        return None
    stem = playable_stem(path)
    try:
        siblings = [f for f in stem.parent.glob(glob.escape(stem.name) + ".*") if f.is_file()]
    except OSError:
        return None
    real_parent = os.path.realpath(stem.parent)
    if not _inside(real_parent, folders) or not all(_inside(os.path.realpath(f), folders) for f in siblings):
        return None
    return Path(real_parent) / stem.name


class FlowValidator:
    """Checks a flow document: kinds, branches, reachability, traps, ways out of menus, prompts, ASR keywords."""

    def __init__(self, *, vocabulary_for: Callable[[str, str | None], Vocabulary | None] | None = None,
                 queues: Collection[str] | None = None, base_dir: Path | None = None,
                 override_dir: Path | None = None) -> None:
        # vocabulary_for(language, asr_model) → the model's vocabulary, or None when that model is not installed.
        self._vocabulary_for = vocabulary_for
        self._queues = set(queues) if queues is not None else None
        self._base_dir = base_dir
        self._override_dir = override_dir

    def validate_text(self, text: str) -> FlowReport:
        """Parse and check YAML text."""
        doc, parse_errors = parse_flow(text)
        report = FlowReport(doc, [FlowIssue(e.node, e.message) for e in parse_errors])
        if doc is not None:
            self._check(doc, report)
        return report

    def validate_file(self, path: Path) -> FlowReport:
        """Parse and check a YAML file (relative sound files from its folder)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return FlowReport(None, [FlowIssue(None, f"cannot read {path}: {exc.strerror or exc}")])
        if self._base_dir is None:
            return FlowValidator(vocabulary_for=self._vocabulary_for, queues=self._queues,
                                 base_dir=path.resolve().parent, override_dir=self._override_dir).validate_text(text)
        return self.validate_text(text)

    # -- checks ---------------------------------------------------------------------------------
    def sound_folders(self) -> list[Path]:
        """The folders "file:" prompts may name sounds in: the flow file's folder and the recorded-prompts folder."""
        return [d for d in (self._base_dir, self._override_dir) if d is not None]

    def _check(self, doc: FlowDocument, report: FlowReport) -> None:
        err = report.errors.append
        names = set(doc.nodes)
        self._check_names(doc, report)
        if doc.default_language not in doc.languages:
            err(FlowIssue(None, f"default_language {doc.default_language!r} is not one of the flow's languages "
                                f"({', '.join(doc.languages)})"))
        if doc.start not in names:
            err(FlowIssue(None, f"start node {doc.start!r} does not exist"))
        for name, node in doc.nodes.items():
            for label, target in node.branches().items():
                if target not in names:
                    err(FlowIssue(name, f"{label} goes to missing node {target!r}"))
            self._check_node(doc, name, node, report)
        if doc.start in names:
            self._check_graph(doc, report)
        for name, node in doc.nodes.items():
            for ref in node.prompts():
                self._check_prompt(doc, name, ref, report)
        for language, spec in doc.languages.items():
            for prompt, text in spec.prompts.items():
                for placeholder in dict.fromkeys(_PLACEHOLDER.findall(text)):
                    if placeholder != HOTLINE_NUMBER_PLACEHOLDER:
                        err(FlowIssue(None, f"prompt {prompt!r} ({language}): unknown placeholder {placeholder} "
                                            f"(only {HOTLINE_NUMBER_PLACEHOLDER} is filled in)"))

    def _check_names(self, doc: FlowDocument, report: FlowReport) -> None:
        err = report.errors.append
        for language, spec in doc.languages.items():
            if not LANGUAGE_CODE.fullmatch(language):
                err(FlowIssue(None, f"language {language!r}: {LANGUAGE_CODE_RULE}"))
            if not VOICE_NAME.fullmatch(spec.voice):
                err(FlowIssue(None, f"voice {spec.voice!r} ({language}): {VOICE_NAME_RULE}"))
            for prompt, text in spec.prompts.items():
                if not PROMPT_NAME.fullmatch(prompt):
                    err(FlowIssue(None, f"prompt {prompt!r} ({language}): {PROMPT_NAME_RULE}"))
                if len(text) > MAX_PROMPT_TEXT:
                    err(FlowIssue(None, f"prompt {prompt!r} ({language}): text longer than {MAX_PROMPT_TEXT} "
                                        "characters"))

    def _check_node(self, doc: FlowDocument, name: str, node: Any, report: FlowReport) -> None:
        err = report.errors.append
        if isinstance(node, MenuNode):
            keys = [o.key for o in node.options]
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                err(FlowIssue(name, f"key(s) {', '.join(dupes)} used by more than one option"))
            if node.fallback is None and node.on_failure is None:
                err(FlowIssue(name, "needs a fallback key or an on_failure node for callers who never choose"))
            if node.fallback is not None and node.option(node.fallback) is None:
                err(FlowIssue(name, f"fallback key {node.fallback!r} is not one of its options"))
            self._check_keywords(doc, name, node, report)
        elif isinstance(node, PlayNode) and node.barge_in is not None:
            target = doc.nodes.get(node.barge_in)
            if not isinstance(target, MenuNode):
                err(FlowIssue(name, f"barge_in {node.barge_in!r} is not a menu node"))
        elif isinstance(node, LanguageNode):
            for key, language in node.options.items():
                if language not in doc.languages:
                    err(FlowIssue(name, f"key {key} picks language {language!r}, which the flow does not define"))
        elif isinstance(node, HoursNode):
            try:
                ZoneInfo(node.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                err(FlowIssue(name, f"unknown time zone {node.timezone!r}"))
        elif getattr(node, "kind", "") in ("queue", "callback") and self._queues is not None \
                and node.queue is not None and node.queue not in self._queues:
            err(FlowIssue(name, f"queue {node.queue!r} is not configured (queues: {', '.join(sorted(self._queues))})"))

    def _check_keywords(self, doc: FlowDocument, name: str, node: MenuNode, report: FlowReport) -> None:
        spoken: dict[str, list[str]] = {}
        for option in node.options:
            for language, words in option.keywords.items():
                if language not in doc.languages:
                    report.errors.append(FlowIssue(name, f"key {option.key}: keywords for language {language!r}, "
                                                         "which the flow does not define"))
                    continue
                spoken.setdefault(language, []).extend(words)
        if not node.speech:
            return
        for language, spec in doc.languages.items():
            words = spoken.get(language, [])
            if not words:
                report.warnings.append(FlowIssue(name, f"speech menu has no keywords in language {language!r}: "
                                                       "callers there use the keys only"))
                continue
            vocabulary = self._vocabulary_for(language, spec.asr_model) if self._vocabulary_for else None
            if vocabulary is None:
                report.warnings.append(FlowIssue(name, f"no ASR model installed for language {language!r} "
                                                       f"({spec.asr_model or 'none named'}): the speech menu "
                                                       "falls back to DTMF keys there"))
                continue
            unknown = vocabulary.missing([w for phrase in words for w in phrase.split()])
            for word in dict.fromkeys(unknown):
                report.errors.append(FlowIssue(name, f"keyword {word!r} ({language}) is not in the vocabulary "
                                                     "of that language's ASR model"))

    def _check_prompt(self, doc: FlowDocument, name: str, ref: str, report: FlowReport) -> None:
        if ref.startswith(FILE_PREFIX):
            path = resolve_sound_file(ref, self._base_dir)
            folders = self.sound_folders()
            # Outside first: whether a file exists elsewhere on the machine is none of the flow's business.
            outside = not _inside(os.path.realpath(playable_stem(path).parent), folders)
            if not outside and not sound_file_exists(path):
                report.errors.append(FlowIssue(name, f"prompt file {path} does not exist"))
            elif outside or contained_sound_file(path, folders) is None:
                named = ", ".join(str(f) for f in folders) or "none configured"
                report.errors.append(FlowIssue(name, f"prompt file {path} is outside the prompt folders ({named})"))
            return
        if not PROMPT_NAME.fullmatch(ref):
            report.errors.append(FlowIssue(name, f"prompt {ref!r}: {PROMPT_NAME_RULE} (or file:<path> for a "
                                                 "recorded sound)"))
            return
        for language, spec in doc.languages.items():
            if ref in spec.prompts:
                continue
            if self._override_dir is not None and (self._override_dir / language / f"{ref}.wav").exists():
                continue
            report.errors.append(FlowIssue(name, f"prompt {ref!r} has no text or recorded file in language "
                                                 f"{language!r}"))

    def _check_graph(self, doc: FlowDocument, report: FlowReport) -> None:
        edges = {n: [t for t in node.branches().values() if t in doc.nodes] for n, node in doc.nodes.items()}
        reachable = _reach(edges, [doc.start])
        for name in doc.nodes:
            if name not in reachable:
                report.errors.append(FlowIssue(name, f"unreachable: no path from the start node {doc.start!r}"))
        terminals = [n for n, node in doc.nodes.items() if node.kind in TERMINAL_KINDS]
        people = [n for n, node in doc.nodes.items() if node.kind in PERSON_KINDS]
        reverse: dict[str, list[str]] = {n: [] for n in doc.nodes}
        for source, targets in edges.items():
            for t in targets:
                reverse[t].append(source)
        can_end = _reach(reverse, terminals)
        can_reach_person = _reach(reverse, people)
        for component in _strongly_connected(edges):
            looping = len(component) > 1 or component[0] in edges[component[0]]
            if not looping or not reachable.intersection(component) or can_end.intersection(component):
                continue
            cycle = " → ".join(sorted(component)) + f" → {sorted(component)[0]}"
            report.errors.append(FlowIssue(sorted(component)[0], f"loop {cycle} has no exit: a caller would be "
                                                                 "trapped"))
        for name, node in doc.nodes.items():
            if isinstance(node, MenuNode):
                outs = [o.next for o in node.options] + ([node.on_failure] if node.on_failure else [])
                if not any(t in can_end for t in outs if t in doc.nodes):
                    report.errors.append(FlowIssue(name, "menu has no way to reach a person or hang up"))
                elif not any(t in can_reach_person for t in outs if t in doc.nodes):
                    report.warnings.append(FlowIssue(name, "menu has no way to reach a person (only hang-ups)"))


def _reach(edges: dict[str, list[str]], starts: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = [s for s in starts if s in edges]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(edges[n])
    return seen


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (flows are small but callers' YAML is not to be trusted with recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            targets = edges[node]
            for j in range(i, len(targets)):
                t = targets[j]
                if t not in index:
                    work.append((node, j + 1))
                    work.append((t, 0))
                    recurse = True
                    break
                if t in on_stack:
                    low[node] = min(low[node], index[t])
            if recurse:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out
