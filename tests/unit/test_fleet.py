"""The operator tools' pure parts: HAProxy states, status answers, journal lines, the
lock's holder and age, the audit scope and result, and the guard around a task."""

from __future__ import annotations

import datetime
import json

import pytest
from invoke.exceptions import Exit

from mahaops.fleet import audit, journal, lock, status
from mahaops.hosts import HostSpec

SHOW_STAT = """# pxname,svname,qcur,status,check_status
http,FRONTEND,,OPEN,
app_servers,app-1,0,UP,L7OK
app_servers,app-2,0,DOWN,L7STS
app_servers,app-3,0,DRAIN,L7OK
app_servers,app-4,0,UP 1/2,L7OK
app_servers,BACKEND,0,UP,
"""


def spec(name: str, group: str = "") -> HostSpec:
    return HostSpec(name, ("local", group) if group else ("local",))


def test_haproxy_states_in_the_operators_words() -> None:
    assert status.haproxy_states(SHOW_STAT) == {
        "app-1": "in service",
        "app-2": "unhealthy",
        "app-3": "draining",
        "app-4": "in service (UP 1/2)",
    }


def test_the_process_release_wins_over_the_symlink_which_is_labelled() -> None:
    both = status.HostStatus("app-1", "app", "10.0.0.2")
    status.parse_answer(both, "unit nginx active\nrelease process r2\nrelease symlink r1\n")
    assert (both.release, both.units) == ("r2", {"nginx": "active"})
    stopped = status.HostStatus("worker-1", "worker", "10.0.0.3")
    status.parse_answer(stopped, "unit maha-worker failed\nrelease symlink r1\n")
    assert stopped.release == "r1 (symlink)"


def test_a_restart_a_run_left_owed_is_reported_beside_the_release_running() -> None:
    host = status.HostStatus("app-2", "app", "10.0.0.3")
    status.parse_answer(host, "release process r1\nowed maha-web r2\n")
    assert (host.release, host.owed) == ("r1", {"maha-web": "r2"})


def test_the_status_script_reads_the_markers_a_stopped_run_left(tmp_path) -> None:
    import subprocess

    (tmp_path / "pending").mkdir()
    (tmp_path / "pending" / "maha-web").write_text("r2\n")
    (tmp_path / "releases" / "r1").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/r1")
    # Nothing listens on port 9: the process says nothing, the symlink and marker speak.
    script = status.host_script("app", app_root=str(tmp_path), app_port=9)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    host = status.HostStatus("app-2", "app", "10.0.0.3")
    status.parse_answer(host, out)
    assert (host.release, host.owed) == ("r1 (symlink)", {"maha-web": "r2"})


def test_journal_lines_parse_and_merge_by_time() -> None:
    raw = json.dumps(
        {"__REALTIME_TIMESTAMP": "1700000000000000", "MESSAGE": [104, 105], "_COMM": "x"}
    )
    line = journal.parse("db-1", raw)
    assert line is not None and line.message == "hi" and line.source == "x"
    assert line.text() == "2023-11-14T22:13:20.000Z db-1 x: hi"
    assert journal.parse("db-1", "-- No entries --") is None
    later = journal.Line(line.at + 1, "app-1", "y", "later")
    assert sorted([later, line]) == [line, later]


def test_age_text_and_holder_round_trip() -> None:
    assert [lock.age_text(s) for s in (5, 125, 7380, 90000)] == ["5s", "2m05s", "2h03m", "1d01h"]
    holder = lock.Holder.new("invoke release --env x", who="alice@a")
    assert lock.Holder.from_json(holder.to_json()) == holder
    assert lock.Holder.from_json("garbage") is None
    at = lock.parse_timestamp(holder.since) + datetime.timedelta(seconds=61)
    assert "alice@a running `invoke release --env x`" in holder.describe(at)
    assert "(held for 1m01s)" in holder.describe(at)


def test_the_lock_host_is_the_first_db_server_else_the_first_host() -> None:
    hosts = [spec("app-1", "app_servers"), spec("db-2", "db_servers"), spec("db-1", "db_servers")]
    assert lock.lock_host(hosts).name == "db-1"  # type: ignore[union-attr]
    assert lock.lock_host(hosts[:1]).name == "app-1"  # type: ignore[union-attr]
    assert lock.lock_host([]) is None


def test_scope_release_and_last_deploy_per_host() -> None:
    hosts = [spec("app-1", "app_servers"), spec("db-1", "db_servers"), spec("w-1", "workers")]
    names = lambda chosen: [h.name for h in chosen]  # noqa: E731
    assert names(audit.in_scope(hosts, roles=("app", "worker"))) == ["app-1", "w-1"]
    assert names(audit.in_scope(hosts, roles=("base",), limit=("db-1",))) == ["db-1"]
    assert names(audit.in_scope(hosts, limit=("workers",))) == ["w-1"]
    assert names(audit.in_scope(hosts, roles="app")) == ["app-1"]  # scale's one --role
    assert audit.release_text({"app-1": "r2", "w-1": "r2"}) == "r2"
    assert audit.release_text({"app-1": "r2", "w-1": "r1"}) == "r1 on w-1; r2 on app-1"
    ok = audit.Entry("a", "t1", "deploy", "e", "ok", hosts=["app-1", "db-1"])
    refused = audit.Entry("b", "t2", "release", "e", "refused: held by a", hosts=["app-1"])
    assert audit.last_per_host([ok, refused]) == {"app-1": ok, "db-1": ok}


class FakeLockHost:
    """Stands in for the lock host: records what the guard takes, writes and releases."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, held_by: lock.Holder | None = None):
        self.held_by, self.released = held_by, 0
        self.entries: list[audit.Entry] = []
        host = spec("db-1", "db_servers")
        monkeypatch.setattr(audit, "_hosts", lambda env: [host])
        monkeypatch.setattr(audit, "_running", lambda scope: {})
        monkeypatch.setattr(lock, "acquire", self.acquire)
        monkeypatch.setattr(audit, "append", lambda where, entry: self.entries.append(entry))
        monkeypatch.setattr(audit, "record_and_release", self.record_and_release)

    def acquire(self, env: str, where: HostSpec, holder: lock.Holder) -> None:
        if self.held_by:
            raise lock.LockHeld(env, self.held_by)
        self.held_by = holder

    def record_and_release(
        self, where: HostSpec, entry: audit.Entry, holder: lock.Holder | None
    ) -> None:
        self.entries.append(entry)
        if holder is not None and holder == self.held_by:
            self.released += 1
            self.held_by = None


def test_guard_takes_the_lock_records_a_failure_and_releases(monkeypatch) -> None:
    fake = FakeLockHost(monkeypatch)

    @audit.guarded("deploy")
    def deploy(c: object, env: str = "local", dry: bool = False) -> None:
        assert fake.held_by is not None, "the body runs under the lock"
        raise Exit("boom", code=3)

    with pytest.raises(Exit):
        deploy(None, env="e")
    assert fake.released == 1 and fake.held_by is None
    assert fake.entries[-1].result == "failed (exit 3): boom"


def test_guard_leaves_dry_runs_alone_and_refuses_a_second_holder(monkeypatch) -> None:
    first = lock.Holder("alice@a", "invoke release --env e", lock.timestamp(), "t")
    fake = FakeLockHost(monkeypatch, held_by=first)
    ran = []

    @audit.guarded("deploy")
    def deploy(c: object, env: str = "local", dry: bool = False) -> None:
        ran.append(dry)

    deploy(None, env="e", dry=True)
    assert ran == [True] and fake.entries == []
    with pytest.raises(Exit, match="locked by alice@a running `invoke release --env e`"):
        deploy(None, env="e")
    assert ran == [True] and fake.held_by == first
    assert fake.entries[-1].result == "refused: held by alice@a"


def test_the_lock_is_released_as_the_inventory_logs_in_after_the_run(monkeypatch) -> None:
    """An AWS host's first contact hands it from ``admin`` to the deploy user: the lock
    taken as ``admin`` is released (and the run recorded) logging in as the deploy user."""
    fake = FakeLockHost(monkeypatch)
    before = spec("db-1", "db_servers")
    before.data["ssh_user"] = "admin"
    after = spec("db-1", "db_servers")
    after.data["ssh_user"] = "maha"
    logins: list[str] = []
    monkeypatch.setattr(audit, "_hosts", lambda env: [after if logins else before])
    taken, released = fake.acquire, fake.record_and_release

    def acquire(env: str, where: HostSpec, holder: lock.Holder) -> None:
        logins.append(where.data["ssh_user"])
        taken(env, where, holder)

    def record_and_release(where: HostSpec, entry: audit.Entry, holder: lock.Holder | None) -> None:
        logins.append(where.data["ssh_user"])
        released(where, entry, holder)

    monkeypatch.setattr(lock, "acquire", acquire)
    monkeypatch.setattr(audit, "record_and_release", record_and_release)

    @audit.guarded("deploy")
    def deploy(c: object, env: str = "local", dry: bool = False) -> None:
        pass

    deploy(None, env="e")
    assert logins == ["admin", "maha"]
    assert fake.released == 1 and fake.entries[-1].result == "ok"
