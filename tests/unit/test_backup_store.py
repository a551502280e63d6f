"""The backup store's forced command, rendered as the log role renders it and run here: it
takes a new file whose bytes and checksum match, and refuses everything else."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mahaops import firewall
from mahaops.settings.db import PostgresBackupOffhostSettings
from mahaops.templating import render

DUMP = "maha-20250101T023000Z.dump"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The store script with its home in ``tmp_path``; returns the script's path."""
    settings = PostgresBackupOffhostSettings(
        postgresql_backup_offhost_dir=str(tmp_path),
        postgresql_backup_offhost_max_mb=1,
        postgresql_backup_offhost_min_free_mb=1,
    )
    script = tmp_path / "maha-backup-store"
    script.write_text(
        render(
            "log/maha-backup-store.py.j2",
            **settings.model_dump(),
            backup_store_script=str(script),
            backup_store_key="ssh-ed25519 AAAA",
        )
    )
    (tmp_path / "archive").mkdir()
    return script


def request(script: Path, command: str, data: bytes = b"") -> subprocess.CompletedProcess[str]:
    """``command`` as sshd hands it to the forced command, ``data`` on its stdin."""
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": command, "SSH_CONNECTION": "10.0.0.2 1 2 3"}
    return subprocess.run(
        [sys.executable, str(script), "serve"],
        input=data.decode(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def put(script: Path, name: str, data: bytes, size: int | None = None, sha: str = "") -> str:
    sha = sha or hashlib.sha256(data).hexdigest()
    size = len(data) if size is None else size
    run = request(script, f"put {name} {size} {sha}", data)
    return run.stdout if run.returncode == 0 else f"refused {run.stderr}"


def test_a_new_dump_is_stored_read_only_and_listed(store: Path) -> None:
    data = b"PGDMP dump bytes"
    answer = put(store, f"maha/{DUMP}", data)
    assert answer.split() == [
        "stored",
        f"maha/{DUMP}",
        str(len(data)),
        hashlib.sha256(data).hexdigest(),
    ]
    stored = store.parent / "archive" / "maha" / DUMP
    assert stored.read_bytes() == data and stored.stat().st_mode & 0o777 == 0o400
    assert request(store, "list maha").stdout.split() == [DUMP, str(len(data))]


def test_an_existing_file_is_never_overwritten(store: Path) -> None:
    put(store, f"maha/{DUMP}", b"first")
    assert "never overwritten" in put(store, f"maha/{DUMP}", b"second")
    assert (store.parent / "archive" / "maha" / DUMP).read_bytes() == b"first"


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "sh",
        "",
        "internal-sftp",
        "get maha/" + DUMP,
        f"put maha/../globals/{DUMP} 4 {'0' * 64}",
        f"put ../maha/{DUMP} 4 {'0' * 64}",
        f"put maha/{DUMP}.sh 4 {'0' * 64}",
        f"put maha/other-20250101T023000Z.dump 4 {'0' * 64}",  # another database's name
        f"put maha/{DUMP} 4 {'0' * 64}; rm -rf /",
        "list ..",
    ],
)
def test_anything_but_put_and_list_is_refused(store: Path, command: str) -> None:
    run = request(store, command, b"data")
    assert run.returncode == 1 and "refused" in run.stderr
    assert not any((store.parent / "archive").rglob("*"))


@pytest.mark.parametrize(
    ("data", "size", "sha", "why"),
    [
        (b"data", 4, "0" * 64, "sha256 differs"),
        (b"dat", 4, "", "3 bytes arrived"),
        (b"data and more", 4, "", "more than the 4 bytes"),
        (b"x", 2 * 1024 * 1024, "", "over the store's limit"),
    ],
)
def test_a_put_that_does_not_match_its_announcement_leaves_nothing(
    store: Path, data: bytes, size: int, sha: str, why: str
) -> None:
    assert why in put(store, f"maha/{DUMP}", data, size, sha or hashlib.sha256(data).hexdigest())
    directory = store.parent / "archive" / "maha"
    assert not directory.exists() or not any(directory.iterdir())  # no partial left either


def test_pruning_keeps_the_newest_and_what_is_recent(store: Path) -> None:
    directory = store.parent / "archive" / "maha"
    directory.mkdir()
    old = time.time() - 40 * 86400
    for day, age in (("01", old), ("02", old + 60), ("03", time.time())):
        path = directory / f"maha-202501{day}T023000Z.dump"
        path.write_text(day)
        os.utime(path, (age, age))
    lonely = store.parent / "archive" / "globals"
    lonely.mkdir()
    (lonely / "globals-20250101T023000Z.sql").write_text("roles")
    os.utime(lonely / "globals-20250101T023000Z.sql", (old, old))

    subprocess.run([sys.executable, str(store), "prune"], check=True, capture_output=True)

    assert sorted(p.name for p in directory.iterdir()) == ["maha-20250103T023000Z.dump"]
    assert [p.name for p in lonely.iterdir()] == ["globals-20250101T023000Z.sql"]  # the newest


def test_a_put_that_would_eat_the_disks_reserve_is_refused(store: Path) -> None:
    script = store.read_text()
    # More than the whole disk: free space moves while other tests run, its size does not.
    reserve = shutil.disk_usage(store.parent).total // (1024 * 1024) + 1
    store.write_text(script.replace("MIN_FREE = 1 *", f"MIN_FREE = {reserve} *"))
    assert "less than" in put(store, f"maha/{DUMP}", b"data")
    assert not (store.parent / "archive" / "maha").exists()


def test_the_log_server_admits_ssh_from_the_db_hosts_only_when_it_keeps_their_dumps() -> None:
    def ssh_rules(data: dict[str, object]) -> list[firewall.Rule]:
        openings = firewall.role_openings("log", data)
        groups = {"db_servers": ["10.0.3.4"], "all": ["10.0.3.4", "10.0.3.5"]}
        return [r for r in firewall.rules(openings, ["203.0.113.0/24"], groups) if r.port == 22]

    assert [r.addresses for r in ssh_rules({"postgresql_backup_offhost": True})] == [
        ("10.0.3.4/32",)
    ]
    assert ssh_rules({}) == []  # off (AWS: S3): the log role opens no SSH of its own
