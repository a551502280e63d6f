"""Reading ansible-playbook's output: the PLAY RECAP and which tasks changed."""

from __future__ import annotations

from mahaops.ansible_export.playbook import changed_tasks, recap

OUTPUT = """
PLAY [Base system (every host)] ************************************************

TASK [base : Harden sshd] ******************************************************
ok: [base-1]
changed: [base-2]

RUNNING HANDLER [base : Reload sshd for the new configuration] *****************
changed: [base-2]

PLAY RECAP *********************************************************************
base-1                     : ok=16   changed=0    unreachable=0    failed=0    skipped=0{TAIL}
base-2                     : ok=17   changed=2    unreachable=0    failed=0    skipped=0{TAIL}
""".replace("{TAIL}", "    rescued=0    ignored=0")


def test_the_play_recap_gives_each_hosts_counts() -> None:
    assert recap(OUTPUT) == {
        "base-1": {"ok": 16, "changed": 0, "unreachable": 0, "failed": 0},
        "base-2": {"ok": 17, "changed": 2, "unreachable": 0, "failed": 0},
    }


def test_changed_tasks_are_named_per_host() -> None:
    assert changed_tasks(OUTPUT) == {
        "base-2": ["Harden sshd", "Reload sshd for the new configuration"]
    }
