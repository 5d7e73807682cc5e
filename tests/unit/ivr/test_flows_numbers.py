"""More numbers for the IVR, each running its own flow: settings, dialplan rendering, the router (dialed number →
flow, admin routes over the configuration, fall back to default), FlowStore/FlowAdmin routes with their audit,
the console routes API and the /flows link; {hotline_number} in prompt texts; "no-match:<word>" in speech menus.
The engine is driven through the real FastAGI server by the fake Asterisk AGI client where the AGI matters."""
from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent_console import create_console_app
from agent_console.flow_views import FLOW_ADMIN
from config.settings import SettingsError, load_settings
from identity import AccountStore, Role
from ivr import FlowValidator, HotlineCallFlow, IvrOptions, LiveFlowSource, PromptLibrary, PromptSet
from ivr.flow_admin import FlowAdmin, FlowNotFound, RouteRefused
from ivr.flow_prompts import FlowPrompts
from ivr.flow_routes import FlowRouter, dialed_number
from ivr.flow_source import FileFlowSource
from ivr.flow_store import FlowStore
from ivr.prompts import load_prompt_sets
from telephony import FastAgiServer
from telephony.asterisk_process import AsteriskConfig, AsteriskConfigError, render_asterisk_config
from tests.support.cases import FakeCases
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth, login
from tests.support.descriptions import DescriptionPipelines
from tests.support.fake_agi import FakeAgiCall, ScriptedAgi, agi_variables
from tests.support.flows import DEFAULT_FLOW, QUEUES, LangPrompts, base_flow, check, flood_flow, vocabulary_for
from tests.support.hotline_process import PROJECT_ROOT
from tests.support.live import FakeLive
from tests.support.ports import module_ports
from tests.support.recognizer import FakeRecognizer
from tests.support.records import FakeRecords

PORTS = module_ports(__name__)
AGI_PORT = PORTS.spare(0)
HTTP_PORT = PORTS.spare(1)  # and the next one


class NamedVersions:
    """FlowStore's lookup half for several flows, in memory, with admin routes."""

    def __init__(self) -> None:
        self.texts: dict[str, dict[int, str]] = {}
        self.routed: dict[str, str] = {}
        self.route_error: Exception | None = None

    async def live_version(self, name: str) -> int | None:
        return max(self.texts.get(name, {}), default=None)

    async def get(self, name: str, version: int | None = None) -> Any:
        texts = self.texts[name]
        return type("V", (), {"text": texts[version if version is not None else max(texts)]})()

    async def route_of(self, number: str) -> str | None:
        if self.route_error is not None:
            raise self.route_error
        return self.routed.get(number)


def _router(store: NamedVersions, numbers: dict[str, str], flow_dir: Path | None = None) -> FlowRouter:
    validator = FlowValidator(base_dir=DEFAULT_FLOW.parent)

    def source_for(name: str) -> LiveFlowSource:
        path = DEFAULT_FLOW if name == "default" else (flow_dir / f"{name}.yaml" if flow_dir else None)
        shipped = FileFlowSource(path, validator, lambda _doc: LangPrompts()) if path and path.exists() else None
        return LiveFlowSource(store, name, shipped, validator, lambda _doc: LangPrompts())

    return FlowRouter(numbers, "12345", source_for, store)


def _engine(tmp_path: Path, pipelines: DescriptionPipelines, flows: Any,
            speech: Any = None) -> tuple[HotlineCallFlow, FakeCases]:
    cases = FakeCases()
    live = FakeLive()
    descriptions = pipelines.start(cases, FakeRecognizer("설명"), max_attempts=1).descriptions
    engine = HotlineCallFlow(options=IvrOptions(recordings_dir=tmp_path, menu_retries=2), flows=flows,
                             cases=cases, records=FakeRecords(), live=live, descriptions=descriptions,
                             speech=speech)
    return engine, cases


class DialedAgi(ScriptedAgi):
    """The scripted caller with the AGI variables Asterisk sends: the number dialed as argument and extension."""

    def __init__(self, *, arg: str | None = None, extension: str = "12345", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers = {"agi_extension": extension, **({"agi_arg_1": arg} if arg is not None else {})}


# -- settings and the dialplan ----------------------------------------------------------------------------

def test_ivr_numbers_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HOTLINE_"):
            monkeypatch.delenv(key)
    config = tmp_path / "hotline.yaml"
    config.write_text("hotline_number: '12300'\nivr_numbers: {12399: flood-warning, 12388: holiday}\n")
    settings = load_settings(config)
    assert settings.flow_numbers == {"12300": "default", "12399": "flood-warning", "12388": "holiday"}
    monkeypatch.setenv("HOTLINE_IVR_NUMBERS", '{"12345": "holiday"}')
    assert load_settings(config).flow_numbers == {"12300": "default", "12345": "holiday"}
    monkeypatch.delenv("HOTLINE_IVR_NUMBERS")
    assert load_settings().flow_numbers == {"12345": "default"}  # the shipped configuration
    for content, message in (("ivr_numbers: {'12-99': default}",
                              "setting ivr_numbers: number '12-99' must be 2-15 digits"),
                             ("ivr_numbers: {'12399': Flood}",
                              "setting ivr_numbers: number 12399: 'Flood' is not a flow name (lower-case letters, "
                              "digits, - and _)")):
        config.write_text(content)
        with pytest.raises(SettingsError) as err:
            load_settings(config)
        assert str(err.value) == message


def test_every_number_reaches_the_ivr_in_the_dialplan(tmp_path: Path) -> None:
    cfg = AsteriskConfig(run_dir=tmp_path / "ast", ami_secret="s3cret", hotline_number="12345",
                         ivr_numbers=["12399", "12345", "12388"])
    conf = render_asterisk_config(cfg)
    ext = (conf.parent / "extensions.conf").read_text()
    inbound = ext[ext.index("[hotline-inbound]"):ext.index("\n[", ext.index("[hotline-inbound]") + 1)]
    # Each further number tells the IVR which number was dialed, then runs the hotline's dialplan.
    for number in ("12399", "12388"):
        assert f"exten => {number},1,Set(HOTLINE_DIALED={number})" in inbound
        assert inbound.index(f"exten => {number},1") < inbound.index("exten => _[0-9*#+].,1,Hangup(1)")
    assert inbound.count(" same => n,Goto(12345,1)") == 2
    assert "exten => 12345,1,Set(HOTLINE_DIALED" not in inbound  # the hotline number is not listed twice
    ivr = next(line for line in inbound.splitlines() if "AGI(agi://127.0.0.1:4573/ivr" in line)
    assert ivr.split(";")[0].rstrip().endswith(",${HOTLINE_DIALED})")  # the number dialed: the AGI argument
    agents = ext[ext.index("[hotline-agents]"):]
    assert "exten => 12399,1,Goto(hotline-inbound,12399,1)" in agents
    with pytest.raises(AsteriskConfigError, match=r"^IVR number '1x' must be 2-15 digits$"):
        render_asterisk_config(AsteriskConfig(run_dir=tmp_path / "bad", ami_secret="s3cret", ivr_numbers=["1x"]))


# -- the router ------------------------------------------------------------------------------------------------

def test_dialed_number_comes_from_the_agi_argument_then_the_extension() -> None:
    assert dialed_number(DialedAgi(arg="12399")) == "12399"
    assert dialed_number(DialedAgi(arg="", extension="12345")) == "12345"  # Asterisk sends an empty argument
    assert dialed_number(DialedAgi(extension="s")) is None
    assert dialed_number(ScriptedAgi()) is None


async def test_each_number_runs_its_flow_and_an_unpublished_one_falls_back_to_default(
        tmp_path: Path, pipelines: DescriptionPipelines, caplog: pytest.LogCaptureFixture) -> None:
    store = NamedVersions()
    router = _router(store, {"12345": "default", "12399": "flood-warning"})
    engine, cases = _engine(tmp_path, pipelines, router)
    # Not published yet: the caller gets the default flow, and the log says why.
    with caplog.at_level(logging.WARNING, logger="ivr.flow_routes"):
        early = DialedAgi(arg="12399", keys=["2"], uniqueid="1.1")
        await engine.handle(early)  # type: ignore[arg-type]
    assert early.variables["HOTLINE_QUEUE"] == "inquiries"
    assert ("number 12399: flow 'flood-warning' cannot run (flow 'flood-warning' has no published version and "
            "no shipped file); the call runs 'default'") in caplog.messages
    assert await router.check() == ["number 12399 runs flow 'flood-warning', which is neither published nor a "
                                    "shipped file; its calls run 'default' until it is published"]

    store.texts["flood-warning"] = {1: flood_flow()}  # published: the very next call to 12399 runs it
    flood = DialedAgi(arg="12399", uniqueid="1.2")
    await engine.handle(flood)  # type: ignore[arg-type]
    case = cases.last()
    assert case.category == "flood_warning" and case.menu_path == ["hangup"]
    assert flood.log == ["play:/ko/warning", "play:/ko/bye"] and "HOTLINE_QUEUE" not in flood.variables
    hotline = DialedAgi(keys=["0"], uniqueid="1.3")  # the hotline number itself (agi_extension), no argument
    await engine.handle(hotline)  # type: ignore[arg-type]
    assert hotline.variables["HOTLINE_QUEUE"] == "operator" and "play:/ko/welcome" in hotline.log
    assert await router.check() == []


async def test_an_admin_route_wins_over_the_configuration_until_the_lookup_fails(
        tmp_path: Path, pipelines: DescriptionPipelines, caplog: pytest.LogCaptureFixture) -> None:
    store = NamedVersions()
    store.texts["flood-warning"] = {1: flood_flow()}
    router = _router(store, {"12399": "flood-warning"})
    engine, cases = _engine(tmp_path, pipelines, router)
    store.routed["12345"] = "flood-warning"  # e.g. `hotline flows route 12345 flood-warning`
    call = DialedAgi(uniqueid="2.1")
    await engine.handle(call)  # type: ignore[arg-type]
    assert call.log == ["play:/ko/warning", "play:/ko/bye"]
    assert await router.check({"12345": "holiday", "19999": "nope"}) == [
        "number 12345 runs flow 'holiday', which is neither published nor a shipped file; its calls run "
        "'default' until it is published"]  # 19999 is not a number of the IVR: its route never applies
    store.route_error = ConnectionError("database is down")
    with caplog.at_level(logging.WARNING, logger="ivr.flow_routes"):
        again = DialedAgi(keys=["0"], uniqueid="2.2")
        await engine.handle(again)  # type: ignore[arg-type]
    assert again.variables["HOTLINE_QUEUE"] == "operator"
    assert "number 12345: route lookup failed (database is down); running its configured flow 'default'" \
        in caplog.messages


async def test_a_flow_shipped_as_a_file_beside_the_default_runs_until_published(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    (tmp_path / "holiday.yaml").write_text(flood_flow("holiday"), encoding="utf-8")
    store = NamedVersions()
    router = _router(store, {"12388": "holiday"}, flow_dir=tmp_path)
    engine, cases = _engine(tmp_path, pipelines, router)
    call = DialedAgi(arg="12388", uniqueid="3.1")
    await engine.handle(call)  # type: ignore[arg-type]
    assert cases.last().category == "holiday"
    assert await router.check() == []


# -- the engine through the FastAGI server: the dialed number and a spoken word that matches no option ----------

def _agi_replies(spoken: list[bool]) -> dict[str, Any]:
    """Asterisk's answers; RECORD FILE writes audio (the caller spoke) or nothing, one entry per recording."""
    takes = list(spoken)

    def record(command: str) -> str:
        path = re.match(r'RECORD FILE "([^"]+)" wav', command)
        assert path is not None, command
        if takes.pop(0):
            Path(path.group(1) + ".wav").write_bytes(b"RIFF" + b"\0" * 16000)
        return "200 result=0 (timeout) endpos=8000"

    return {"GET FULL VARIABLE": "200 result=1 (linked-9.1)", "STREAM FILE": "200 result=0 endpos=8000",
            "GET DATA": "200 result= (timeout)", "SET VARIABLE": "200 result=1", "EXEC": "200 result=0",
            "SAY DIGITS": "200 result=0", "RECORD FILE": record}


async def _run_agi_call(engine: HotlineCallFlow, variables: dict[str, str], replies: dict[str, Any]) -> FakeAgiCall:
    server = FastAgiServer("127.0.0.1", AGI_PORT, command_timeout=5)
    server.add_route("ivr", engine.handle)
    await server.start()
    call = FakeAgiCall(AGI_PORT, variables=variables, replies=replies)
    try:
        await call.start()
        await call.wait_closed(timeout=10)
    finally:
        await call.close()
        await server.close()
    return call


async def test_speech_menu_records_an_unknown_word_as_no_match_and_plays_the_invalid_prompt(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    # a word no option has, nothing recognized, a keyword
    recognizer = FakeRecognizer("택시", "", "버스", then="", check_files=True)
    store = NamedVersions()
    engine, cases = _engine(tmp_path, pipelines, _router(store, {}), speech=lambda lang, model: recognizer)
    call = await _run_agi_call(engine, agi_variables("ivr", "9.1", port=AGI_PORT),
                               _agi_replies([True, True, True]))
    case = cases.last()
    assert case.menu_path == ["no-match:택시", "no-input", "speech:버스:2"] and case.category == "inquiry"
    played = [c for c in call.commands if c.startswith(("STREAM FILE", "RECORD FILE"))]
    kinds = ["record" if c.startswith("RECORD") else c.split('"')[1] for c in played]
    # The word nobody offered gets the wrong-choice prompt, like a wrong key; nothing recognized the no-input one.
    assert kinds[:9] == ["/ko/welcome", "/ko/menu", "record", "/ko/invalid", "/ko/menu", "record", "/ko/no_input",
                         "/ko/menu", "record"]


async def test_silence_in_a_speech_menu_stays_no_input(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer(then="", check_files=True)
    store = NamedVersions()
    engine, cases = _engine(tmp_path, pipelines, _router(store, {}), speech=lambda lang, model: recognizer)
    await _run_agi_call(engine, agi_variables("ivr", "9.1", port=AGI_PORT), _agi_replies([False, False, False]))
    assert cases.last().menu_path == ["no-input", "no-input", "no-input", "fallback:0"]
    assert recognizer.grammars == []  # nothing was said: nothing to recognize


async def test_the_agi_argument_picks_the_flow_through_fastagi(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    store = NamedVersions()
    store.texts["flood-warning"] = {4: flood_flow()}
    engine, cases = _engine(tmp_path, pipelines, _router(store, {"12399": "flood-warning"}))
    variables = agi_variables("ivr", "9.1", port=AGI_PORT, agi_arg_1="12399")  # extension: the hotline number
    call = await _run_agi_call(engine, variables, _agi_replies([]))
    assert cases.last().category == "flood_warning"
    assert [c for c in call.commands if c.startswith("STREAM FILE")] == ['STREAM FILE "/ko/warning" ""',
                                                                         'STREAM FILE "/ko/bye" ""']


# -- stored routes, their audit, the console -----------------------------------------------------------------


def _admin(engine: Any) -> tuple[FlowAdmin, FlowStore]:
    validator = FlowValidator(vocabulary_for=vocabulary_for, queues=QUEUES, base_dir=DEFAULT_FLOW.parent)
    store = FlowStore(engine)
    return FlowAdmin(store, validator, lambda _doc: LangPrompts(), DEFAULT_FLOW,
                     numbers={"12345": "default", "12399": "flood-warning"}), store


async def test_admin_routes_a_number_to_a_published_flow_audited(engine: Any) -> None:
    admin, store = _admin(engine)
    assert [(r["number"], r["flow"], r["routed_by"]) for r in await admin.routes()] == [
        ("12345", "default", None), ("12399", "flood-warning", None)]
    with pytest.raises(FlowNotFound, match=r"^no flow named 'holiday': publish it first$"):
        await admin.route("12399", "holiday", "alice")
    with pytest.raises(RouteRefused, match=r"^number '12377' does not reach the IVR \(numbers: 12345, 12399\); "):
        await admin.route("12377", "default", "alice")
    with pytest.raises(RouteRefused, match="is not a flow name"):
        await admin.route("12399", "../../etc/passwd", "alice")
    await admin.publish(flood_flow(), "alice")
    routed = await admin.route("12345", "flood-warning", "bob")
    assert routed["flow"] == "flood-warning" and routed["configured_flow"] == "default" and routed["routed_by"] == "bob"
    assert await store.route_of("12345") == "flood-warning"
    await admin.route("12345", "default", "carol")  # the shipped file counts as a flow
    assert await store.route_of("12345") == "default"
    audit = await admin.audit()
    assert [(a.actor, a.action, a.flow_name, a.to_version, a.detail) for a in audit[:2]] == [
        ("carol", "route", "default", 0, "number 12345: flood-warning → default"),
        ("bob", "route", "flood-warning", 1, "number 12345: default → flood-warning")]


async def test_console_routes_api_and_the_flows_link(engine: Any) -> None:
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("admin1", PASSWORD, Role.ADMIN, display_name="Admin")
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR, display_name="Super")
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    app[FLOW_ADMIN], _ = _admin(engine)
    client = TestClient(TestServer(app, port=HTTP_PORT))
    await client.start_server()
    supervisor = TestClient(TestServer(app, port=HTTP_PORT + 1))
    await supervisor.start_server()
    try:
        csrf = await login(client, "admin1")
        page = await (await client.get("/")).text()
        assert '<a href="/flows" id="flows-link">IVR flows</a>' in page
        await app[FLOW_ADMIN].publish(flood_flow(), "admin1")
        resp = await client.post("/api/flows/routes", json={"number": "12399", "flow": "default"},
                                 headers={"X-CSRF-Token": csrf})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["flow"] == "default"
        routes = (await (await client.get("/api/flows/routes")).json())["routes"]
        assert [(r["number"], r["flow"], r["configured_flow"], r["routed_by"]) for r in routes] == [
            ("12345", "default", "default", None), ("12399", "default", "flood-warning", "admin1")]
        resp = await client.post("/api/flows/routes", json={"number": "12399", "flow": "nope"},
                                 headers={"X-CSRF-Token": csrf})
        assert resp.status == 404 and (await resp.json())["error"] == "no flow named 'nope': publish it first"
        resp = await client.post("/api/flows/routes", json={"number": "999", "flow": "default"},
                                 headers={"X-CSRF-Token": csrf})
        assert resp.status == 400 and (await resp.json())["error"].startswith("number '999' does not reach the IVR")
        resp = await client.post("/api/flows/routes", json={"number": "12399"}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 400
        audit = (await (await client.get("/api/flows/audit")).json())["audit"]
        assert audit[0]["action"] == "route" and audit[0]["detail"] == "number 12399: flood-warning → default"

        csrf = await login(supervisor, "super1")
        assert "flows-link" not in await (await supervisor.get("/")).text()  # only admins see it
        resp = await supervisor.post("/api/flows/routes", json={"number": "12399", "flow": "flood-warning"},
                                     headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert resp.status == 403
        assert (await supervisor.get("/api/flows/routes", headers={"Accept": "application/json"})).status == 403
    finally:
        await client.close()
        await supervisor.close()


# -- {hotline_number} in prompt texts -----------------------------------------------------------------------------

def test_hotline_number_placeholder_is_spoken_and_keys_the_cache(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spoken: list[tuple[str, str]] = []

    def fake_synthesize(text: str, voice: str, target: Path, speed: int = 150) -> Path:
        spoken.append((text, target.name))
        target.write_bytes(b"RIFF")
        return target

    monkeypatch.setattr("ivr.prompts.synthesize_speech", fake_synthesize)
    monkeypatch.setattr("ivr.prompts.shutil.which", lambda tool: f"/usr/bin/{tool}")
    texts = {"welcome": "Welcome to the {hotline_number} citizen hotline.", "wait": "About {minutes} minutes."}

    async def prepare(number: str | None) -> str:
        library = PromptLibrary(PromptSet("en", "en-us", texts), tmp_path, hotline_number=number)
        await library.prepare_all()
        return library.path("welcome")

    first = asyncio.run(prepare("12345"))
    second = asyncio.run(prepare("120"))
    assert spoken[0] == ("Welcome to the 1 2 3 4 5 citizen hotline.", Path(first).name + ".wav")  # digit by digit
    assert spoken[1][0] == "About {minutes} minutes."  # other placeholders are filled by their owners
    assert spoken[2] == ("Welcome to the 1 2 0 citizen hotline.", Path(second).name + ".wav")
    assert first != second  # a new number is new audio, not the cached old one
    assert asyncio.run(prepare("12345")) == first and len(spoken) == 3  # the same number: from the cache


def test_hotline_number_in_flow_prompts_and_prompts_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spoken: list[str] = []

    def fake_synthesize(text: str, voice: str, target: Path, speed: int = 150) -> Path:
        spoken.append(text)
        target.write_bytes(b"RIFF")
        return target

    monkeypatch.setattr("ivr.prompts.synthesize_speech", fake_synthesize)
    monkeypatch.setattr("ivr.prompts.shutil.which", lambda tool: f"/usr/bin/{tool}")
    report = FlowValidator(base_dir=DEFAULT_FLOW.parent).validate_text(flood_flow())
    assert report.ok and report.document is not None
    asyncio.run(FlowPrompts(report.document, tmp_path, hotline_number="120").prepare())
    assert "1 2 0 홍수 경보입니다." in spoken
    prompts_yaml = tmp_path / "prompts.yaml"
    prompts_yaml.write_text("ko:\n  voice: ko\n  welcome: '{hotline_number} 시민 핫라인입니다.'\n"
                            "  wait: '약 {minutes}분'\n", encoding="utf-8")
    ko = load_prompt_sets(prompts_yaml, "120")["ko"]
    assert ko.texts == {"welcome": "1 2 0 시민 핫라인입니다.", "wait": "약 {minutes}분"}
    assert load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml", "120")["en"].texts["welcome"] == \
        "Welcome to the 1 2 0 citizen hotline."


def test_an_unknown_placeholder_in_a_prompt_is_refused() -> None:
    flow = base_flow()
    flow["languages"]["ko"]["prompts"]["hi"] = "{hotline_numbr}번입니다"
    errors, _ = check(flow)
    assert errors == ["prompt 'hi' (ko): unknown placeholder {hotline_numbr} (only {hotline_number} is filled in)"]
    flow["languages"]["ko"]["prompts"]["hi"] = "{hotline_number}번입니다"
    assert check(flow) == ([], [])
