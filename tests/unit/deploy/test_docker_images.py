"""The Docker images hold no private data and run unprivileged: .dockerignore (read with Docker's matching rules)
keeps .env, var/, databases, recordings, secrets, virtualenvs and .git out of the build context while every source
file stays in; both images end as the same non-root user, and docker-compose runs them as that user."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.support.hotline_process import PROJECT_ROOT

IMAGES = {"bridge": PROJECT_ROOT / "Dockerfile", "asterisk": PROJECT_ROOT / "asterisk" / "Dockerfile"}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (moby patternmatcher): ** any folders, * and ? within one name."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) of each .dockerignore line, in order."""
    rules = []
    for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        cleaned = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((exception, _pattern_regex(cleaned)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves path out of the build context: the last rule matching it or a parent folder wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not exception
    return result


PRIVATE = [".env", ".env.production", "config/.env", "var/secrets.yaml", "var/hotline.db", "var/hotline.db-wal",
           "var/recordings/C-20261129-0001.wav", "var/recordings/calls/1700000000.1-citizen.wav",
           "var/asterisk/etc/manager.conf", "var/test-e2e/hotline.db", "hotline.db", "hotline.db-shm",
           "data/hotline.db", "recordings/C-1.wav", "secrets.yaml", "config/secrets.yaml", ".venv/bin/python",
           ".git/config", ".git/objects/ab/cdef", "node_modules/x/index.js",
           "agent_console/static/node_modules/x/index.js", "ivr/__pycache__/prompts.cpython-311.pyc",
           "tests/var/test-x/hotline.db"]
SOURCE = ["pyproject.toml", "README.md", "Dockerfile", "asterisk/Dockerfile", "hotline/app.py", "ivr/prompts.py",
          "config/hotline.yaml", "config/prompts.yaml", "config/ivr/default.yaml", "asterisk/templates/manager.conf",
          "storage/migrations/env.py", "agent_console/templates/base.html", "scripts/setup-system.sh"]


@pytest.mark.parametrize("path", PRIVATE)
def test_private_files_stay_out_of_the_build_context(path: str) -> None:
    assert ignored(path, ignore_rules()), f"{path} would be baked into the images"


@pytest.mark.parametrize("path", SOURCE)
def test_source_files_go_into_the_build_context(path: str) -> None:
    assert ignored(path, ignore_rules()) is False, f"{path} is needed in the images"


def test_every_package_file_of_the_working_tree_goes_in_and_nothing_under_var() -> None:
    rules = ignore_rules()
    packages = ("hotline", "telephony", "ivr", "asr", "queueing", "agent_console", "config", "cases", "storage",
                "identity", "lifecycle", "transcripts", "asterisk")
    left_out, baked = [], []
    for root, dirs, files in os.walk(PROJECT_ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for name in files:
            rel = Path(root, name).relative_to(PROJECT_ROOT).as_posix()
            top = rel.split("/")[0]
            if top in packages and "__pycache__" not in rel and ignored(rel, rules):
                left_out.append(rel)
            if top == "var" and not ignored(rel, rules):
                baked.append(rel)
    assert not left_out, left_out[:20]
    assert not baked, baked[:20]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_ends_as_the_unprivileged_hotline_user(image: str) -> None:
    steps = instructions(IMAGES[image])
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    final = steps[last_from:]
    users = [arg for op, arg in final if op == "USER"]
    assert users, f"{image}: no USER, the container runs as root"
    assert users[-1] == "hotline:hotline", users
    user_at = max(i for i, (op, _) in enumerate(final) if op == "USER")
    assert all(op not in ("RUN", "COPY", "ADD") for op, _ in final[user_at:]), "build steps after USER"
    made = " ".join(arg for op, arg in final[:user_at] if op == "RUN")
    assert "useradd --system --uid 10001 --gid hotline" in made and "groupadd --system --gid 10001 hotline" in made
    # The run folder (the shared volume's mount point) belongs to that user, private, from the image on.
    assert "install -d -m 0700 -o hotline -g hotline /var/hotline" in made
    assert any(op == "COPY" and arg.split()[0] == "." for op, arg in final)  # .dockerignore is what filters it


def test_asterisk_starts_with_a_private_umask() -> None:
    cmd = [arg for op, arg in instructions(IMAGES["asterisk"]) if op == "CMD"][-1]
    argv = yaml.safe_load(cmd)  # the exec form is a JSON array
    assert argv[:2] == ["sh", "-c"]
    script = shlex.split(argv[2])
    assert script[:4] == ["umask", "077", "&&", "exec"] and script[4] == "asterisk", script


def test_compose_runs_asterisk_and_the_bridge_as_the_images_user() -> None:
    services = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("asterisk", "bridge"):
        user = str(services[name].get("user", ""))
        assert user == "10001:10001", f"{name}: user {user!r}"
        assert not services[name].get("privileged"), name
