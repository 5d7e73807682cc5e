"""A flow published through the console of a real `hotline run` cannot reach the filesystem: a prompt named like a
path is answered 422 and writes nothing, a sound outside the prompt folders is refused, and a text that looks like
an espeak-ng option ("-f/etc/hostname", "-w<path>") is spoken as text into the prompt cache under var/."""
from __future__ import annotations

import array
import re
import subprocess
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
ENV = {
    "HOTLINE_REDIS_KEY_PREFIX": f"hotline-test-prompt-attacks-{PORTS.start}",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-prompt-attacks", ports=PORTS, env=ENV)
    async with running_hotline(h):
        yield h


class Admin:
    """The console as an admin uses it: logged in through the form, CSRF token on every POST."""

    def __init__(self, session: aiohttp.ClientSession, base: str, csrf: str) -> None:
        self.session = session
        self.base = base
        self.csrf = csrf

    async def publish(self, flow: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /api/flows/publish; the status and the JSON answer."""
        async with self.session.post(self.base + "/api/flows/publish", headers={"X-CSRF-Token": self.csrf},
                                     json={"yaml": yaml.safe_dump(flow, allow_unicode=True)},
                                     timeout=aiohttp.ClientTimeout(total=60)) as resp:
            return resp.status, await resp.json()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(hotline: HotlineUnderTest) -> AsyncIterator[Admin]:
    password = hotline.settings().admin_password
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(hotline.http_url + "/login") as resp:
            match = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
        assert match, "login form has no CSRF token"
        async with session.post(hotline.http_url + "/login", allow_redirects=False,
                                data={"username": "admin", "password": password, "csrf_token": match.group(1)}) as resp:
            assert resp.status in (302, 303), resp.status
        async with session.get(hotline.http_url + "/api/flows") as resp:
            assert resp.status == 200
        async with session.get(hotline.http_url + "/") as resp:
            page = await resp.text()
        token = re.search(r'name="csrf-token" content="([^"]+)"', page) or re.search(
            r'name="csrf_token" value="([^"]+)"', page)
        assert token, "no CSRF token on the console page"
        yield Admin(session, hotline.http_url, token.group(1))


def probe_flow(prompts: dict[str, str], welcome: str = "hi", name: str = "probe") -> dict[str, Any]:
    """A small valid English flow that plays `welcome` and queues for an operator."""
    return {"name": name, "start": "welcome", "default_language": "en",
            "languages": {"en": {"voice": "en-us", "prompts": prompts}},
            "nodes": {"welcome": {"kind": "play", "prompt": welcome, "next": "operator"},
                      "operator": {"kind": "queue", "queue": "operator"}}}


def same_speech(a: Path, b: Path) -> bool:
    """The same utterance: as many samples, each within sox's dither (it adds random noise of a few steps)."""
    with wave.open(str(a)) as wa, wave.open(str(b)) as wb:
        if (wa.getnframes(), wa.getframerate()) != (wb.getnframes(), wb.getframerate()):
            return False
        fa, fb = wa.readframes(wa.getnframes()), wb.readframes(wb.getnframes())
    sa, sb = array.array("h", fa), array.array("h", fb)
    return max((abs(x - y) for x, y in zip(sa, sb, strict=True)), default=0) <= 8


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


async def test_a_prompt_named_like_a_path_is_refused_and_writes_nothing(hotline: HotlineUnderTest,
                                                                        admin: Admin) -> None:
    tag = uuid.uuid4().hex[:12]
    escape = Path("/tmp") / f"escape-{tag}"
    name = f"../../../../../../../../tmp/escape-{tag}"
    before = files_under(hotline.run_dir / "prompts")
    status, body = await admin.publish(probe_flow({"hi": "Hello.", name: "Written outside."}))
    assert status == 422, body
    assert f"prompt {name!r} (en): a prompt name starts with a letter" in body["error"]
    assert "\n" not in body["error"]
    assert not list(Path("/tmp").glob(f"escape-{tag}*")), "a WAV was written outside var/"
    assert files_under(hotline.run_dir / "prompts") == before
    assert not escape.exists()
    # The node naming it is refused as well (not as "no text": as not a name).
    status, body = await admin.publish(probe_flow({"hi": "Hello."}, welcome=name))
    assert status == 422 and "a prompt name starts with a letter" in body["error"], body


async def test_a_sound_outside_the_prompt_folders_is_refused(admin: Admin, tmp_path: Path) -> None:
    outside = tmp_path / "outside.wav"
    with wave.open(str(outside), "wb") as w:  # a real, playable 8 kHz sound: only its place is wrong
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 1600)
    for ref in (f"file:{outside}", "file:/etc/hostname", "file:../../../../../../etc/hostname"):
        status, body = await admin.publish(probe_flow({"hi": "Hello."}, welcome=ref))
        assert status == 422, (ref, body)
        assert "is outside the prompt folders" in body["error"], (ref, body)


async def test_a_text_that_looks_like_an_option_is_spoken_as_text(hotline: HotlineUnderTest, admin: Admin,
                                                                  tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    target = Path("/tmp") / f"espeak-{tag}.wav"
    texts = {"hi": "-f/etc/hostname", "bye": f"-w{target}"}
    before = files_under(hotline.run_dir / "prompts")
    status, body = await admin.publish(probe_flow(texts, name=f"probe-{tag[:6]}"))
    assert status == 201, body
    assert not target.exists(), "espeak-ng took the text for -w and wrote a file"
    made = files_under(hotline.run_dir / "prompts") - before
    by_name = {p.name.split("-")[0]: p for p in made}
    assert set(by_name) == {"hi", "bye"}, made
    assert all(p.suffix == ".wav" and p.stat().st_size > 1000 for p in made)

    def spoken(text: str, name: str) -> Path:
        """What espeak-ng (same voice, speed and sox recipe) makes of the text read from a file: text, never
        options."""
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
        raw, wav = tmp_path / f"{name}.raw.wav", tmp_path / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), "-f", str(tmp_path / f"{name}.txt")],
                       check=True, capture_output=True, timeout=30)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav)], check=True, timeout=30)
        return wav

    assert same_speech(by_name["hi"], spoken("-f/etc/hostname", "literal"))
    assert not same_speech(by_name["hi"], spoken(Path("/etc/hostname").read_text(), "hostname"))
    assert same_speech(by_name["bye"], spoken(f"-w{target}", "literal-w"))
