"""The private staging of sudo uploads (``mahaops.pyinfra_hooks``), against pyinfra's own
``SSHConnector.put_file`` driving a model of an SFTP server (OpenSSH's sftp-server: new
files 0666 and directories 0777, less its umask 022) and of the ``cp``/``rm`` it runs.

Every state the model passes through is kept, so a claim is about every moment of the
upload, not only its end.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyinfra.connectors.ssh import SSHConnector

from mahaops import pyinfra_hooks

UMASK = 0o022
SECRET = b"password=hunter2-but-longer\n"
DEST = "/etc/maha/secret.conf"


@dataclass
class Node:
    kind: str  # "d" or "f"
    mode: int
    data: bytes = b""


@dataclass
class Remote:
    """The host's files as the SSH user and root see them, and every state they went through."""

    nodes: dict[str, Node] = field(
        default_factory=lambda: {"/tmp": Node("d", 0o1777), "/etc/maha": Node("d", 0o755)}
    )
    moments: list[dict[str, Node]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    fail_copy: bool = False

    def changed(self) -> None:
        self.moments.append({p: Node(n.kind, n.mode, n.data) for p, n in self.nodes.items()})

    def readable_by_others(self, moment: dict[str, Node], path: str) -> bool:
        """Whether a user other than the owner can read ``path`` in that moment."""
        parent = posixpath.dirname(path)
        while parent not in ("/", ""):
            if parent in moment and not moment[parent].mode & 0o001:
                return False  # no search permission on a directory on the way
            parent = posixpath.dirname(parent)
        return bool(moment[path].mode & 0o004)


class Handle:
    def __init__(self, remote: Remote, path: str) -> None:
        self.remote, self.path = remote, path

    def chmod(self, mode: int) -> None:
        self.remote.nodes[self.path].mode = mode
        self.remote.changed()

    def write(self, data: bytes) -> None:
        self.remote.nodes[self.path].data += data
        self.remote.changed()

    def close(self) -> None:
        pass

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sftp:
    """The SFTP calls pyinfra and the hook make, as sftp-server answers them."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        if path in self.remote.nodes:
            raise OSError(f"{path} exists")
        self.remote.nodes[path] = Node("d", mode & ~UMASK)
        self.remote.changed()

    def open(self, path: str, mode: str = "r") -> Handle:
        node = self.remote.nodes.get(path)
        if node is not None and "x" in mode:
            raise OSError(f"{path} exists")
        if node is None:
            self.remote.nodes[path] = Node("f", 0o666 & ~UMASK)
        elif "w" in mode:
            node.data = b""
        self.remote.changed()
        return Handle(self.remote, path)

    def putfo(self, fl: Any, path: str, *args: Any, **kwargs: Any) -> None:
        with self.open(path, "wb") as handle:
            handle.write(fl.read())

    def remove(self, path: str) -> None:
        if self.remote.nodes.pop(path, None) is None:
            raise OSError(f"{path} does not exist")
        self.remote.changed()

    def rmdir(self, path: str) -> None:
        if any(p.startswith(path + "/") for p in self.remote.nodes):
            raise OSError(f"{path} is not empty")
        self.remote.nodes.pop(path)
        self.remote.changed()

    def close(self) -> None:
        pass


class FakeHost:
    def get_temp_filename(self, hash_key: str) -> str:
        return f"/tmp/pyinfra-{hashlib.sha1(hash_key.encode()).hexdigest()}"


def connector(remote: Remote) -> SSHConnector:
    """pyinfra's own SSH connector, its SFTP and shell answered by the model."""
    conn = SSHConnector.__new__(SSHConnector)
    conn.host = FakeHost()  # type: ignore[assignment]
    conn.data = {"ssh_file_transfer_protocol": "sftp"}  # type: ignore[typeddict-item]
    conn.get_file_transfer_connection = lambda: Sftp(remote)

    def run_shell_command(command: Any, **kwargs: Any) -> tuple[bool, Any]:
        argv = shlex.split(command.get_raw_value())
        remote.commands.append(" ".join(argv))
        if argv[0] == "cp":
            if remote.fail_copy:
                return False, type("Output", (), {"stderr": "cp: no"})()
            source, dest = remote.nodes[argv[1]], argv[2]
            if dest not in remote.nodes:  # cp gives a new file its source's mode, less umask
                remote.nodes[dest] = Node("f", source.mode & ~UMASK)
            remote.nodes[dest].data = source.data
        elif argv[:2] == ["rm", "-f"]:
            remote.nodes.pop(argv[2], None)
        remote.changed()
        return True, None

    conn.run_shell_command = run_shell_command  # type: ignore[method-assign,assignment]
    return conn


def upload(put: Any, remote: Remote, **arguments: Any) -> bool:
    return bool(put(connector(remote), io.BytesIO(SECRET), DEST, **arguments))


def secret_exposed(remote: Remote) -> list[str]:
    return [
        path
        for moment in remote.moments
        for path, node in moment.items()
        if node.kind == "f" and SECRET in node.data and remote.readable_by_others(moment, path)
    ]


def test_pyinfra_alone_stages_a_sudo_upload_where_anyone_can_read_it() -> None:
    # What the hook is for: if pyinfra ever stages privately itself, this test says so.
    remote = Remote()
    assert upload(pyinfra_hooks._original_ssh_put, remote, _sudo=True)
    assert secret_exposed(remote), "pyinfra staged privately: the hook may not be needed"
    assert remote.commands[0].startswith("cp /tmp/pyinfra-")


def test_a_sudo_upload_is_never_readable_by_another_user() -> None:
    remote = Remote()
    assert upload(pyinfra_hooks._put_file_staged_privately, remote, _sudo=True)
    assert secret_exposed(remote) == []
    assert remote.nodes[DEST].data == SECRET
    assert remote.nodes[DEST].mode == 0o600, "a new destination is born 0600"
    copied_from = remote.commands[0].split()[1]
    assert posixpath.dirname(copied_from).startswith("/tmp/maha-upload-")
    assert sorted(remote.nodes) == ["/etc/maha", DEST, "/tmp"], "staging left behind"


def test_staging_directories_are_fresh_and_unguessable() -> None:
    names = {pyinfra_hooks.staging_directory("/tmp/pyinfra-x") for _ in range(50)}
    assert len(names) == 50 and all(len(posixpath.basename(n)) > 40 for n in names)


def test_a_failed_copy_leaves_no_staged_file_behind() -> None:
    remote = Remote(fail_copy=True)
    assert not upload(pyinfra_hooks._put_file_staged_privately, remote, _sudo=True)
    assert secret_exposed(remote) == []
    assert sorted(remote.nodes) == ["/etc/maha", "/tmp"]


def test_a_name_taken_by_someone_else_stops_the_upload() -> None:
    remote = Remote()
    taken = "/tmp/maha-upload-taken"
    remote.nodes[taken] = Node("d", 0o777)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pyinfra_hooks, "staging_directory", lambda _temp: taken)
        with pytest.raises(OSError):
            upload(pyinfra_hooks._put_file_staged_privately, remote, _sudo=True)
    assert DEST not in remote.nodes


def test_an_upload_without_sudo_is_pyinfra_own() -> None:
    remote = Remote()
    remote.nodes["/home/maha"] = Node("d", 0o700)
    put = pyinfra_hooks._put_file_staged_privately
    assert put(connector(remote), io.BytesIO(SECRET), "/home/maha/file")
    assert remote.commands == [] and remote.nodes["/home/maha/file"].data == SECRET
    assert not [p for p in remote.nodes if "maha-upload" in p]


def test_install_puts_the_hook_on_pyinfra_ssh_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_pyinfra_hooks import _PATCHED  # what install() swaps, restored after

    for owner, name in _PATCHED:
        monkeypatch.setattr(owner, name, getattr(owner, name))
    monkeypatch.setattr(SSHConnector, "put_file", pyinfra_hooks._original_ssh_put)
    monkeypatch.setattr(pyinfra_hooks, "_installed", [])
    pyinfra_hooks.install()
    assert SSHConnector.put_file is pyinfra_hooks._put_file_staged_privately
