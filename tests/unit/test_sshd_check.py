"""The base role's sshd check (operations.sshd): a run fails when sshd's effective settings
(``sshd -T``) differ from the project's, naming each; a plan does not judge a configuration
about to be replaced."""

from __future__ import annotations

from typing import Any

import pytest

from deploys.base import sshd_expected
from mahaops.settings.base import BaseSettings
from operations import sshd
from operations.sshd import SshdEffective, check_command, differences, effective

# As Debian 12's sshd prints them (abridged), for the template's settings.
SSHD_T = """port 22
permitrootlogin no
passwordauthentication no
kbdinteractiveauthentication no
permitemptypasswords no
authenticationmethods publickey
maxauthtries 3
allowgroups ssh-users
allowtcpforwarding no
allowagentforwarding no
permituserenvironment no
x11forwarding no
listenaddress [::]:22
listenaddress 0.0.0.0:22"""


class _Host:
    def __init__(self, output: str) -> None:
        self.answer = SshdEffective().process(output.splitlines())
        self.noops: list[str] = []

    def get_fact(self, fact: Any, **_kwargs: Any) -> Any:
        assert fact is SshdEffective
        return self.answer

    def noop(self, message: str) -> None:
        self.noops.append(message)


EXPECTED = sshd_expected(BaseSettings())


def check(
    monkeypatch: pytest.MonkeyPatch, output: str, pending: bool = False
) -> tuple[_Host, list[str]]:
    stub = _Host(output)
    monkeypatch.setattr(sshd, "host", stub)
    commands = effective._inner(expected=EXPECTED, pending=pending)
    return stub, [c.get_raw_value() for c in commands]


def test_the_hardened_settings_pass_without_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    stub, commands = check(monkeypatch, SSHD_T)
    assert commands == [] and stub.noops == ["sshd applies the project's settings"]


def test_a_setting_overridden_elsewhere_fails_the_run_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run then runs the check's shell on the host, which prints them and fails (the
    # real-host test runs that shell against sshd).
    overridden = SSHD_T.replace("passwordauthentication no", "passwordauthentication yes")
    assert check(monkeypatch, overridden)[1] == [check_command(EXPECTED)]
    missing = SSHD_T.replace("allowgroups ssh-users\n", "")
    assert check(monkeypatch, missing)[1] == [check_command(EXPECTED)]
    actual = SshdEffective().process(missing.splitlines())
    assert differences(EXPECTED, actual) == ["allowgroups is (unset) (expected ssh-users)"]


def test_a_plan_leaves_a_configuration_about_to_change_to_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = SSHD_T.replace("passwordauthentication no", "passwordauthentication yes")
    stub, commands = check(monkeypatch, old, pending=True)
    assert commands == [] and stub.noops[0].startswith("sshd's effective settings")


def test_repeated_keywords_are_kept() -> None:
    answer = SshdEffective().process(SSHD_T.splitlines())
    assert answer["listenaddress"] == "[::]:22, 0.0.0.0:22"
