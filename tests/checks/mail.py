"""What an operator expects of the mail sink (maha-mail). Shared with the Ansible tests."""

from __future__ import annotations

import json
import shlex
from typing import Any

from mahaops.local.hosts import LocalHost

SERVICE = "maha-mail"


def _property(th: Any, name: str) -> str:
    return str(th.check_output(f"systemctl show -p {name} --value {SERVICE}")).strip()


def check_mail(th: Any, port: int = 25) -> None:
    """The mail role's promises: the sink runs sandboxed as its own user, listens on
    ``port``, and ``maha-mail`` reads what it stored."""
    assert th.service(SERVICE).is_running and th.service(SERVICE).is_enabled
    assert _property(th, "User") == "maha-mail"
    for name, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", "cap_net_bind_service"),
        ("Restart", "on-failure"),
    ):
        assert _property(th, name) == value, name
    pid = _property(th, "MainPID")
    assert th.check_output(f"ps -o user= -p {pid}").strip() == "maha-mail"
    assert f":{port} " in th.check_output("ss -Htln")
    assert th.run("maha-mail count").rc == 0


def send_script(server: str, port: int, sender: str, recipient: str, message_id: str) -> str:
    """A shell command that sends one message with Python's smtplib; exit 0 once accepted."""
    code = (
        "import smtplib, sys\n"
        "from email.message import EmailMessage\n"
        "m = EmailMessage()\n"
        f"m['From'] = {sender!r}\n"
        f"m['To'] = {recipient!r}\n"
        f"m['Message-ID'] = {message_id!r}\n"
        "m['Subject'] = 'maha mail check'\n"
        "m.set_content('hello')\n"
        f"with smtplib.SMTP({server!r}, {port}, timeout=5) as s:\n"
        "    s.send_message(m)\n"
    )
    return f"python3 -c {shlex.quote(code)}"


def sink_stats(testbed: Any, sink: LocalHost, *headers: str) -> dict[str, Any]:
    """``maha-mail stats`` on the sink, filtered by ``headers`` (NAME=VALUE)."""
    args = " ".join(f"--header {shlex.quote(h)}" for h in headers)
    result: dict[str, Any] = json.loads(testbed.exec(sink, f"maha-mail stats {args}"))
    return result
