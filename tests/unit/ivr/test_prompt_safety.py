"""Flow prompts cannot reach the filesystem: names are identifiers, sounds stay under the prompt folders, texts
and voices never pass for espeak-ng options."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from ivr import FlowPrompts, FlowValidator, PromptError, PromptLibrary, PromptSet, parse_flow


def small_flow(prompts: dict[str, str] | None = None, welcome: str = "hi", language: str = "ko",
               voice: str = "ko") -> str:
    """A valid one-language flow whose welcome prompt and texts a test replaces."""
    return yaml.safe_dump({
        "name": "t", "start": "welcome", "default_language": language,
        "languages": {language: {"voice": voice, "prompts": prompts if prompts is not None else {"hi": "안녕하세요"}}},
        "nodes": {"welcome": {"kind": "play", "prompt": welcome, "next": "operator"},
                  "operator": {"kind": "queue", "queue": "operator"}},
    }, allow_unicode=True)


def errors_of(text: str, **kwargs: Path) -> list[str]:
    report = FlowValidator(**kwargs).validate_text(text)  # type: ignore[arg-type]
    return [str(e) for e in report.errors]


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a/b", "-w", "x.wav", "hi\n", "", "1abc", "a" * 65])
def test_a_prompt_text_under_a_name_that_is_not_an_identifier_is_refused(name: str) -> None:
    errors = errors_of(small_flow({"hi": "안녕하세요", name: "text"}))
    assert errors == [f"prompt {name!r} (ko): a prompt name starts with a letter and has only letters, digits "
                      "and _ (at most 64)"]
    assert all("\n" not in e for e in errors)


def test_a_node_naming_a_prompt_that_is_not_an_identifier_is_refused() -> None:
    errors = errors_of(small_flow(welcome="../../etc/passwd"))
    assert errors == ["node 'welcome': prompt '../../etc/passwd': a prompt name starts with a letter and has only "
                      "letters, digits and _ (at most 64) (or file:<path> for a recorded sound)"]


def test_language_codes_and_voices_are_plain_names() -> None:
    assert errors_of(small_flow(language="../../x")) == [
        "language '../../x': a language code starts with a letter and has only letters, digits, - and _ (at most 16)"]
    assert errors_of(small_flow(voice="-w/tmp/x.wav")) == [
        "voice '-w/tmp/x.wav' (ko): an espeak-ng voice name starts with a letter or digit and has only letters, "
        "digits, -, + and _"]
    assert errors_of(small_flow(voice="en-us+f3")) == []


def test_an_overlong_prompt_text_is_refused() -> None:
    assert errors_of(small_flow({"hi": "가" * 2001})) == [
        "prompt 'hi' (ko): text longer than 2000 characters"]


def test_a_text_starting_with_a_dash_is_fine_for_the_validator() -> None:
    # It is spoken as text (see the real espeak-ng test); nothing to refuse.
    assert errors_of(small_flow({"hi": "-f/etc/hostname"})) == []


def test_sound_files_must_lie_under_the_flow_folder_or_the_recorded_prompts(tmp_path: Path) -> None:
    flows, recorded, elsewhere = tmp_path / "flows", tmp_path / "recorded", tmp_path / "elsewhere"
    for folder in (flows, recorded, elsewhere):
        folder.mkdir()
        (folder / "sound.wav").write_bytes(b"RIFF")
    kwargs = {"base_dir": flows, "override_dir": recorded}
    assert errors_of(small_flow(welcome="file:sound"), **kwargs) == []
    assert errors_of(small_flow(welcome=f"file:{recorded / 'sound.wav'}"), **kwargs) == []
    folders = f"{flows}, {recorded}"
    for ref, path in ((f"file:{elsewhere / 'sound'}", elsewhere / "sound"),
                      ("file:../elsewhere/sound.wav", flows / "../elsewhere/sound.wav")):
        assert errors_of(small_flow(welcome=ref), **kwargs) == [
            f"node 'welcome': prompt file {path} is outside the prompt folders ({folders})"]
    assert errors_of(small_flow(welcome="file:/etc/hostname"), **kwargs) == [
        f"node 'welcome': prompt file /etc/hostname is outside the prompt folders ({folders})"]


def test_a_symbolic_link_out_of_the_prompt_folder_is_refused(tmp_path: Path) -> None:
    flows, secret = tmp_path / "flows", tmp_path / "secret.wav"
    flows.mkdir()
    secret.write_bytes(b"RIFF")
    (flows / "greeting.wav").symlink_to(secret)
    assert errors_of(small_flow(welcome="file:greeting"), base_dir=flows) == [
        f"node 'welcome': prompt file {flows / 'greeting'} is outside the prompt folders ({flows})"]
    # A sibling Asterisk could pick instead (greeting.gsm next to a harmless greeting.wav) counts too.
    (flows / "greeting.wav").unlink()
    (flows / "greeting.wav").write_bytes(b"RIFF")
    (flows / "greeting.gsm").symlink_to(secret)
    assert errors_of(small_flow(welcome="file:greeting.wav"), base_dir=flows) == [
        f"node 'welcome': prompt file {flows / 'greeting.wav'} is outside the prompt folders ({flows})"]


def test_without_any_prompt_folder_no_sound_file_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "sound.wav").write_bytes(b"RIFF")
    assert errors_of(small_flow(welcome=f"file:{tmp_path / 'sound'}")) == [
        f"node 'welcome': prompt file {tmp_path / 'sound'} is outside the prompt folders (none configured)"]


def test_flow_prompts_refuse_an_outside_sound_even_unvalidated(tmp_path: Path) -> None:
    """The second lock: a flow that skipped the validator still cannot play a file outside the folders."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    doc, errors = parse_flow(small_flow({}, welcome=f"file:{tmp_path / 'secret'}"))
    assert doc is not None and not errors
    prompts = FlowPrompts(doc, tmp_path / "cache", None, flows)
    with pytest.raises(PromptError, match="outside the prompt folders"):
        asyncio.run(prompts.prepare())
    with pytest.raises(PromptError, match="outside the prompt folders"):
        prompts.path(f"file:{tmp_path / 'secret'}", "ko")


def test_the_prompt_library_refuses_names_and_voices_that_could_escape(tmp_path: Path) -> None:
    """Defence behind the validator: prompts.yaml or a caller of the library cannot pass a path as a name."""
    cache = tmp_path / "cache"
    with pytest.raises(PromptError, match="a prompt name starts with a letter"):
        asyncio.run(PromptLibrary(PromptSet("ko", "ko", {"../../x": "안녕"}), cache).prepare_all())
    with pytest.raises(PromptError, match="a language code starts with a letter"):
        asyncio.run(PromptLibrary(PromptSet("../ko", "ko", {"hi": "안녕"}), cache).prepare_all())
    with pytest.raises(PromptError, match="an espeak-ng voice name"):
        asyncio.run(PromptLibrary(PromptSet("ko", "-w/tmp/x", {"hi": "안녕"}), cache).prepare_all())
    assert not (tmp_path / "x.wav").exists() and list(tmp_path.iterdir()) in ([], [cache])
