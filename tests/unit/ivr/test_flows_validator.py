"""FlowValidator: every reason a flow is refused, each naming its node; `hotline flows validate` exit codes."""
from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.flows import DEFAULT_FLOW, EXAMPLE_FLOW, base_flow, check, validator
from tests.support.hotline_process import run_hotline_command


def test_shipped_flows_are_valid() -> None:
    for path in (DEFAULT_FLOW, EXAMPLE_FLOW):
        report = validator().validate_file(path)
        assert report.ok, [str(e) for e in report.errors]
    # English and Chinese have no Vosk model installed: said, as warnings, not errors.
    report = validator().validate_file(DEFAULT_FLOW)
    warnings = [str(w) for w in report.warnings]
    assert any("'main_menu'" in w and "'en'" in w and "falls back to DTMF" in w for w in warnings), warnings
    assert any("'zh'" in w for w in warnings)


def test_base_flow_is_valid() -> None:
    assert check(base_flow()) == ([], [])


def test_unknown_node_kind() -> None:
    flow = base_flow()
    flow["nodes"]["bus"] = {"kind": "dance", "next": "operator"}
    errors, _ = check(flow)
    assert any(e.startswith("node 'bus': unknown node kind 'dance'") for e in errors), errors


def test_branch_to_missing_node() -> None:
    flow = base_flow()
    flow["nodes"]["bus"]["next"] = "nowhere"
    errors, _ = check(flow)
    assert "node 'bus': next goes to missing node 'nowhere'" in errors


def test_unreachable_node() -> None:
    flow = base_flow()
    flow["nodes"]["orphan"] = {"kind": "hangup"}
    errors, _ = check(flow)
    assert errors == ["node 'orphan': unreachable: no path from the start node 'welcome'"]


def test_loop_without_exit_traps_the_caller() -> None:
    flow = base_flow()
    flow["nodes"]["bus"] = {"kind": "play", "prompt": "hi", "next": "again"}
    flow["nodes"]["again"] = {"kind": "goto", "next": "bus"}
    errors, _ = check(flow)
    assert any(e.startswith("node 'again': loop again → bus → again has no exit") for e in errors), errors


def test_menu_with_no_way_to_a_person_or_hang_up() -> None:
    flow = base_flow()
    flow["nodes"]["menu"]["options"] = [{"key": "1", "next": "info"}]
    flow["nodes"]["menu"]["fallback"] = "1"
    flow["nodes"]["info"] = {"kind": "play", "prompt": "hi", "next": "menu"}
    del flow["nodes"]["bus"], flow["nodes"]["operator"]
    errors, _ = check(flow)
    assert "node 'menu': menu has no way to reach a person or hang up" in errors, errors


def test_menu_needs_a_fallback_and_known_keys() -> None:
    flow = base_flow()
    del flow["nodes"]["menu"]["fallback"]
    errors, _ = check(flow)
    assert any(e.startswith("node 'menu': needs a fallback key or an on_failure node") for e in errors), errors
    flow["nodes"]["menu"]["fallback"] = "7"
    errors, _ = check(flow)
    assert "node 'menu': fallback key '7' is not one of its options" in errors


def test_missing_prompt_file_and_text() -> None:
    flow = base_flow()
    flow["nodes"]["welcome"]["prompt"] = "file:sounds/missing-welcome.wav"
    flow["nodes"]["operator"]["prompt"] = "to_agent"
    errors, _ = check(flow)
    assert f"node 'welcome': prompt file {DEFAULT_FLOW.parent / 'sounds/missing-welcome.wav'} does not exist" in errors
    assert "node 'operator': prompt 'to_agent' has no text or recorded file in language 'ko'" in errors


def test_recorded_prompt_file_and_override(tmp_path: Path) -> None:
    (tmp_path / "welcome.wav").write_bytes(b"RIFF")
    (tmp_path / "ko").mkdir()
    (tmp_path / "ko" / "to_agent.wav").write_bytes(b"RIFF")
    flow = base_flow()
    flow["nodes"]["welcome"]["prompt"] = f"file:{tmp_path / 'welcome'}"
    flow["nodes"]["operator"]["prompt"] = "to_agent"
    assert check(flow, override_dir=tmp_path) == ([], [])


def test_keyword_outside_the_asr_vocabulary() -> None:
    flow = base_flow()
    flow["nodes"]["menu"]["options"][0]["keywords"]["ko"] = ["버스", "도로"]
    errors, _ = check(flow)
    assert errors == ["node 'menu': keyword '도로' (ko) is not in the vocabulary of that language's ASR model"]


def test_speech_menu_without_a_model_falls_back_to_dtmf_with_a_warning() -> None:
    flow = base_flow()
    flow["languages"]["en"] = {"voice": "en-us", "asr_model": "models/none",
                               "prompts": {"hi": "hi", "menu": "menu", "bye": "bye"}}
    flow["nodes"]["menu"]["options"][0]["keywords"]["en"] = ["bus"]
    errors, warnings = check(flow)
    assert errors == []
    assert warnings == ["node 'menu': no ASR model installed for language 'en' (models/none): the speech menu falls "
                        "back to DTMF keys there"]


def test_bad_fields_and_documents_are_one_line_errors() -> None:
    flow = base_flow()
    flow["nodes"]["operator"]["queue"] = "nosuchqueue"
    flow["nodes"]["bus"]["priority"] = 99
    errors, _ = check(flow)
    assert "node 'operator': queue 'nosuchqueue' is not configured (queues: complaints, inquiries, operator)" in errors
    assert any(e.startswith("node 'bus': set: priority: Input should be less than or equal to 10") for e in errors)
    report = validator().validate_text("name: [unclosed")
    assert [str(e) for e in report.errors][0].startswith("not valid YAML at line 1")
    flow = base_flow()
    flow["start"] = "nope"
    errors, _ = check(flow)
    assert "start node 'nope' does not exist" in errors
    assert all("\n" not in e for e in errors)


def test_hours_language_and_barge_in_references() -> None:
    flow = base_flow()
    flow["nodes"]["welcome"]["barge_in"] = "bus"
    flow["nodes"]["hours"] = {"kind": "hours", "timezone": "Mars/Olympus", "weekly": {"mon": ["09:00-18:00"]},
                              "open": "menu", "closed": "menu"}
    flow["nodes"]["lang"] = {"kind": "language", "prompt": "hi", "options": {"2": "xx"}, "next": "hours"}
    flow["start"] = "lang"
    flow["nodes"]["lang"]["next"] = "hours"
    flow["nodes"]["hours"]["open"] = "welcome"
    errors, _ = check(flow)
    assert "node 'welcome': barge_in 'bus' is not a menu node" in errors
    assert "node 'hours': unknown time zone 'Mars/Olympus'" in errors
    assert "node 'lang': key 2 picks language 'xx', which the flow does not define" in errors


async def test_cli_validate_prints_errors_and_exits_non_zero(tmp_path: Path) -> None:
    flow = base_flow()
    flow["nodes"]["bus"]["next"] = "nowhere"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(flow, allow_unicode=True), encoding="utf-8")
    code, out, err = await run_hotline_command(["flows", "validate", str(bad)], {})
    assert code == 1, (out, err)
    assert f"{bad}: error: node 'bus': next goes to missing node 'nowhere'" in err
    code, out, err = await run_hotline_command(["flows", "validate", str(DEFAULT_FLOW)], {})
    assert code == 0, err
    assert "ok (12 nodes" in out
    code, out, err = await run_hotline_command(["flows", "validate", "--json", str(bad)], {})
    assert code == 1
    assert '"node": "bus"' in out
