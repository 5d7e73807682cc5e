"""scripts/setup-system.sh run for real by bash in a sandbox (apt's folders and the package's pid file under a
temporary root, apt-get and dpkg-query stand-ins that record what they are asked): it never stops an Asterisk it
did not just install, it adds bullseye-security with the same pin as bullseye, and a second run changes nothing."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hotline_process import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "setup-system.sh"
PACKAGES = ("asterisk", "asterisk-core-sounds-en-wav", "sip-tester", "espeak-ng", "sox", "libsox-fmt-base",
            "redis-server", "chromium", "chromium-driver")


@dataclass
class Sandbox:
    """A fake / for the script: shims first on PATH, apt's folders and /var/run under root."""

    root: Path
    shims: Path
    calls: Path

    def run(self, missing: tuple[str, ...] = (), asterisk_on_path: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the script with these packages not installed yet; asterisk_on_path: `command -v asterisk` finds it."""
        shim = self.shims / "asterisk"
        if asterisk_on_path:
            shim.write_text("#!/bin/sh\nexit 0\n")
            shim.chmod(0o755)
        else:
            shim.unlink(missing_ok=True)
        env = {"PATH": f"{self.shims}:/usr/bin:/bin", "HOME": str(self.root), "HOTLINE_SETUP_ROOT": str(self.root),
               "MISSING": " ".join(missing), "CALLS": str(self.calls)}
        return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)

    def apt_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    if not Path("/etc/debian_version").exists() or os.geteuid() != 0:
        pytest.skip("the set-up script is for Debian, as root")
    shims, root = tmp_path / "shims", tmp_path / "root"
    shims.mkdir()
    root.mkdir()
    calls = tmp_path / "calls.log"
    scripts = {
        # installed unless named in $MISSING
        "dpkg-query": 'pkg="${@: -1}"; case " $MISSING " in *" $pkg "*) exit 1;; esac; printf "install ok installed"',
        "apt-get": 'echo "apt-get $*" >> "$CALLS"',
        "systemctl": "exit 3",  # no systemd: the script falls back to the pid it checked
        "redis-server": 'echo "redis-server $*" >> "$CALLS"',
        "pg_ctlcluster": 'echo "pg_ctlcluster $*" >> "$CALLS"',
    }
    for name, body in scripts.items():
        (shims / name).write_text(f"#!/bin/bash\n{body}\n")
        (shims / name).chmod(0o755)
    return Sandbox(root, shims, calls)


@pytest.fixture
def fake_asterisk(tmp_path: Path, sandbox: Sandbox) -> Iterator[callable]:  # type: ignore[valid-type]
    """Start processes named asterisk (a copy of bash waiting on a sleep, with the given arguments) and name one
    in the package's pid file."""
    binary = tmp_path / "bin" / "asterisk"
    binary.parent.mkdir()
    shutil.copy("/bin/bash", binary)
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, in_pid_file: bool = True) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(binary), "-c", "sleep 300; :", "asterisk", *args], start_new_session=True)
        started.append(proc)
        if in_pid_file:
            run = sandbox.root / "var" / "run" / "asterisk"
            run.mkdir(parents=True, exist_ok=True)
            (run / "asterisk.pid").write_text(f"{proc.pid}\n")
        for _ in range(50):
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "asterisk":
                break
            time.sleep(0.02)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its sleep too
        proc.wait()


def alive(proc: subprocess.Popen[bytes]) -> bool:
    time.sleep(0.3)  # a TERM would have ended sleep by now
    return proc.poll() is None


def test_the_script_names_no_process_to_kill_by_name() -> None:
    text = SCRIPT.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not re.search(r"\b(pkill|killall)\b", code), "the script kills processes by name"
    assert "asterisk -rx" not in code, "a control socket may belong to another Asterisk"


def test_an_asterisk_running_before_is_left_alone(sandbox: Sandbox, fake_asterisk: callable) -> None:
    # Someone's Asterisk, named in the system pid file; the package was already installed.
    theirs = fake_asterisk()
    result = sandbox.run()
    assert result.returncode == 0, result.stderr
    assert alive(theirs), result.stdout
    assert "stopping" not in result.stdout
    # Installing other packages does not make it ours either.
    result = sandbox.run(missing=("sox",))
    assert result.returncode == 0, result.stderr
    assert alive(theirs), result.stdout


def test_only_the_instance_the_package_just_started_is_stopped(sandbox: Sandbox, fake_asterisk: callable) -> None:
    # A hotline's own Asterisk (its own -C configuration) named in the pid file is never the package's.
    project = fake_asterisk("-C", "/srv/hotline/var/asterisk/etc/asterisk.conf")
    result = sandbox.run(missing=("asterisk",), asterisk_on_path=False)
    assert result.returncode == 0, result.stderr
    assert alive(project), result.stdout
    other = fake_asterisk(in_pid_file=False)
    package = fake_asterisk()  # what the package's postinst started: its pid file, no -C
    result = sandbox.run(missing=("asterisk",), asterisk_on_path=False)
    assert result.returncode == 0, result.stderr
    assert f"stopping the system-wide asterisk (pid {package.pid})" in result.stdout
    assert package.wait(timeout=5) is not None
    assert alive(other) and alive(project)


def test_bullseye_security_is_added_with_the_same_pin_and_a_rerun_changes_nothing(sandbox: Sandbox) -> None:
    result = sandbox.run(missing=("asterisk",), asterisk_on_path=False)
    assert result.returncode == 0, result.stderr
    src = (sandbox.root / "etc/apt/sources.list.d/hotline-bullseye.sources").read_text()
    pin = (sandbox.root / "etc/apt/preferences.d/hotline-bullseye").read_text()
    stanzas = [dict(line.split(": ", 1) for line in s.splitlines()) for s in src.strip().split("\n\n")]
    assert [(s["URIs"], s["Suites"]) for s in stanzas] == [
        ("http://deb.debian.org/debian", "bullseye"), ("http://deb.debian.org/debian-security", "bullseye-security")]
    assert all(s["Signed-By"].startswith("/usr/share/keyrings/") for s in stanzas)
    pins = [dict(line.split(": ", 1) for line in s.splitlines()) for s in pin.strip().split("\n\n")]
    assert [(p["Pin"], p["Pin-Priority"]) for p in pins] == [
        ("release n=bullseye", "100"), ("release n=bullseye-security", "100")]
    assert any(c.startswith("apt-get install") and " asterisk" in c for c in sandbox.apt_calls())

    # An older set-up (bullseye only) is brought up to date even with asterisk installed; then nothing changes.
    (sandbox.root / "etc/apt/sources.list.d/hotline-bullseye.sources").write_text(src.split("\n\n")[0] + "\n")
    sandbox.calls.unlink()
    result = sandbox.run()
    assert result.returncode == 0, result.stderr
    assert "bullseye-security" in result.stdout
    assert (sandbox.root / "etc/apt/sources.list.d/hotline-bullseye.sources").read_text() == src
    assert sandbox.apt_calls() == ["apt-get update -qq"]
    sandbox.calls.unlink()
    result = sandbox.run()
    assert result.returncode == 0 and "adding" not in result.stdout, result.stdout
    assert sandbox.apt_calls() == []
