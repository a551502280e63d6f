"""The fact batch gives each command the answer it gets when run alone (real ``sh``)."""

from __future__ import annotations

import os
import subprocess

import pytest

from mahaops.runner import factcache

# Shapes of output pyinfra's facts produce, and the ways a command can end.
COMMANDS = [
    "echo one; echo two",
    "printf 'no newline at the end'",
    "printf 'blank lines\\n\\n\\nbetween\\n\\n'",
    "true",  # no output at all
    "echo '@@3 0'; echo '|looks like a marker'",  # output that mimics the framing
    "echo before; exit 0; echo never",
    "echo partial; exit 3",
    "cd /tmp && pwd",  # a command that moves must not move the next one
    "pwd",
    "cat",  # reads stdin: must see end of input, not hang
    "echo to stderr >&2; echo to stdout",
    "false",
    "for i in $(seq 1 200); do echo line $i; done",
    "printf 'tab\\there | pipe \\r\\n'",
]


def alone(command: str) -> tuple[str, list[str]]:
    """What pyinfra's SSH connector would make of ``command`` run by itself."""
    proc = subprocess.run(
        ["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, cwd="/", check=False
    )
    lines = proc.stdout.decode().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return str(proc.returncode), lines


def batched(commands: list[str]) -> dict[int, tuple[str, list[str]]]:
    # Like an SSH channel, the batch's stdin stays open: a command reading it must not wait.
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.run(
            ["sh", "-c", factcache._script(commands)],
            stdin=read_end,
            capture_output=True,
            cwd="/",
            timeout=60,
            check=True,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    return factcache.parse(proc.stdout.decode().split("\n"))


def test_every_command_gets_the_output_and_exit_code_it_gets_alone() -> None:
    answers = batched(COMMANDS)
    assert sorted(answers) == list(range(len(COMMANDS)))
    for number, command in enumerate(COMMANDS):
        assert answers[number] == alone(command), command


@pytest.mark.parametrize("count", [1, factcache.PARALLEL, factcache.PARALLEL * 3 + 1])
def test_more_commands_than_run_at_once_all_answer_in_order(count: int) -> None:
    commands = [f"echo {n}; sleep 0.0$((n % 3))" for n in range(count)]
    answers = batched(commands)
    assert [answers[n] for n in range(count)] == [("0", [str(n)]) for n in range(count)]


def test_the_batch_leaves_no_files_behind(tmp_path) -> None:
    commands = ["cd /tmp && echo moved", "exit 1", "echo x"]
    script = factcache._script(commands)
    subprocess.run(
        ["sh", "-c", script], cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)}, check=True
    )
    assert list(tmp_path.iterdir()) == []


def test_a_command_carrying_a_secret_is_never_remembered() -> None:
    from pyinfra.api import MaskString, StringCommand

    from mahaops import masking

    executor = {"_sudo": True}
    assert factcache._key(StringCommand("stat", "/etc/hosts"), executor) is not None
    assert factcache._key(StringCommand("psql", MaskString("pw-in-a-mask-bit")), executor) is None
    masking.register("a-registered-secret-value")
    assert factcache._key("echo a-registered-secret-value", executor) is None
    assert factcache._key("true", {"_env": {"PGPASSWORD": "a-registered-secret-value"}}) is None
