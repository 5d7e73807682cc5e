"""The rendered PJSIP configuration: the trunk is identified by source address only, agents by username + auth."""
from __future__ import annotations

import re
from pathlib import Path

from telephony.asterisk_process import AsteriskConfig, render_asterisk_config


def _sections(text: str) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if m := re.fullmatch(r"\[([^\]]+)\]", line):
            out.append((m.group(1), {}))
        elif "=" in line and out:
            key, _, value = line.partition("=")
            out[-1][1][key.strip()] = value.strip()
    return out


def test_trunk_endpoint_is_identified_by_ip_only_and_agents_by_username(tmp_path: Path) -> None:
    cfg = AsteriskConfig(run_dir=tmp_path / "ast", ami_secret="s3cret",
                         trunk_addresses=("192.0.2.10", "198.51.100.0/24"), agents=[("agent1", "agent1-pass", ())])
    pjsip = (render_asterisk_config(cfg).parent / "pjsip.conf").read_text()
    sections = _sections(pjsip)
    endpoints = {name: opts for name, opts in sections if opts.get("type") == "endpoint"}
    assert endpoints["trunk"]["identify_by"] == "ip"
    assert "auth" not in endpoints["trunk"]  # its address is its credential
    assert endpoints["agent1"]["identify_by"] == "username" and endpoints["agent1"]["auth"] == "agent1-auth"
    identify = [opts for name, opts in sections if opts.get("type") == "identify"]
    assert [i["endpoint"] for i in identify] == ["trunk"]  # only the trunk is matched by address
    assert re.findall(r"^match = (\S+)$", pjsip, re.M) == ["192.0.2.10", "198.51.100.0/24"]
    assert "anonymous" not in dict(sections)["global"].get("endpoint_identifier_order", "")
