"""The moto server's lifetime: started on first use, found again, stopped by ``sim.down``.

moto keeps every resource in memory, so the server *is* the environment's AWS state:
while it runs, provisioning and the inventory talk to it; when it is gone (stopped,
killed, the machine rebooted) that state is gone too, and the stand-in says so instead
of starting an empty server under hosts that no longer have instances.

Its pid, port and token are in ``$MAHA_HOME/sim-server/server.json``; its log beside it;
``aws-config`` there is an ordinary AWS config file (profile ``maha-sim``: endpoint and
dummy credentials), so ``AWS_CONFIG_FILE=… aws --profile maha-sim ec2 describe-instances``
works too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session

from mahaops.settings import DEFAULT_GROUP_DATA
from mahaops.sim import SIM_PROFILE, SimError, sim_home

STATE_FILE = "server.json"
LOG_FILE = "server.log"
AWS_CONFIG = "aws-config"
DUMMY_KEY = "testing"  # moto accepts any credentials; these never leave this machine


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    token: str  # labels the hosts this server's instances became
    started: float
    regions: list[str]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _state_path() -> Path:
    return sim_home() / STATE_FILE


def read_state() -> Server | None:
    """The server last started from this MAHA_HOME, running or not."""
    path = _state_path()
    if not path.exists():
        return None
    return Server(**json.loads(path.read_text()))


def _alive(state: Server) -> bool:
    """Whether the server's process runs: its pid, still our daemon (a pid is reused after
    a reboot), not a zombie waiting for its parent."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(state.pid, os.WNOHANG)  # reap it, when this process started it
    proc = Path(f"/proc/{state.pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes()
        status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"mahaops.sim.daemon" in cmdline and state.token.encode() in cmdline and status != "Z"


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def running() -> Server | None:
    """The server, when it runs and answers."""
    state = read_state()
    if state and _alive(state) and _answers(state.port):
        return state
    return None


def lost_message(state: Server) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.started))
    return (
        f"the sim's moto server (pid {state.pid}, started {started}) is gone, and with it"
        " every AWS resource it held: moto keeps them in memory only (VPC, instances, key"
        " pairs, buckets, load balancer, SSM secrets). Its hosts may still be here."
        " Run `invoke sim.down` to remove them, then `invoke provision --env <sim env>`"
        " builds the environment anew"
    )


def sim_environments(group_data: Path = DEFAULT_GROUP_DATA) -> dict[str, Any]:
    """Environments of group_data/aws.py run by the stand-in (profile ``maha-sim``)."""
    from mahaops.settings import GroupData, from_data
    from mahaops.settings.aws import AwsSettings

    settings = from_data(AwsSettings, GroupData(group_data).merged(["aws"]))
    return {n: e for n, e in settings.aws_environments.items() if e.profile == SIM_PROFILE}


def ensure_server(group_data: Path = DEFAULT_GROUP_DATA) -> Server:
    """The running server; started (after the address check) when none was."""
    state = read_state()
    if state is not None:
        if _alive(state) and _answers(state.port):
            return state
        if _alive(state):  # started, not answering yet: a concurrent first use
            return _wait_answering(state)
        raise SimError(lost_message(state))
    return start(group_data)


def start(group_data: Path = DEFAULT_GROUP_DATA) -> Server:
    from mahaops.local.engine import ensure_engine
    from mahaops.sim.networks import check_free

    if importlib.util.find_spec("moto") is None:
        raise SimError("the sim needs moto's server: .venv/bin/pip install -e '.[test]'")
    envs = sim_environments(group_data)
    if not envs:
        raise SimError(f'no environment in group_data/aws.py has profile "{SIM_PROFILE}"')
    check_free(
        ensure_engine(),
        {f"group_data/aws.py: aws_environments.{n}.vpc_cidr": e.vpc_cidr for n, e in envs.items()},
    )
    port = _free_port()
    token = uuid.uuid4().hex[:12]
    regions = sorted({e.region for e in envs.values()})
    home = sim_home()
    with (home / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "mahaops.sim.daemon",
                "--port", str(port), "--token", token, "--regions", ",".join(regions),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the task that started it
        )  # fmt: skip
    state = Server(process.pid, port, token, time.time(), regions)
    _state_path().write_text(json.dumps(asdict(state)))
    _write_aws_config(state)
    try:
        return _wait_answering(state, process)
    except SimError:
        process.kill()  # nothing was made yet: no state to keep
        process.wait()
        _state_path().unlink(missing_ok=True)
        raise


def _wait_answering(
    state: Server, process: subprocess.Popen[bytes] | None = None, timeout: float = 60.0
) -> Server:
    """``state`` once its port answers. The process that started the server asks its own
    handle whether it died (``/proc`` may still show the parent's command line just
    after the fork)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(state.port):
            return state
        if (process.poll() is not None) if process is not None else not _alive(state):
            break
        time.sleep(0.2)
    log = sim_home() / LOG_FILE
    raise SimError(f"the sim's moto server did not start on 127.0.0.1:{state.port}; see {log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(timeout: float = 20.0) -> Server | None:
    """Stop the server (its AWS state ends with it); returns what it was, if anything."""
    state = read_state()
    if state is None:
        return None
    if _alive(state):
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(state) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(state):
            os.kill(state.pid, signal.SIGKILL)
    _state_path().unlink(missing_ok=True)
    (sim_home() / AWS_CONFIG).unlink(missing_ok=True)
    return state


def _write_aws_config(state: Server) -> Path:
    path = sim_home() / AWS_CONFIG
    path.write_text(
        f"[profile {SIM_PROFILE}]\n"
        f"endpoint_url = {state.endpoint}\n"
        f"aws_access_key_id = {DUMMY_KEY}\n"
        f"aws_secret_access_key = {DUMMY_KEY}\n"
    )
    path.chmod(0o600)
    return path


def session(region: str | None) -> boto3.Session:
    """A boto3 session on the stand-in: its AWS config file, profile ``maha-sim``.

    The endpoint and credentials come from that file through botocore's own config
    chain, so every client made from the session (any service) talks to moto.
    """
    ensure_server()
    core = botocore.session.Session()
    core.set_config_variable("config_file", str(sim_home() / AWS_CONFIG))
    core.set_config_variable("credentials_file", os.devnull)
    return boto3.Session(botocore_session=core, profile_name=SIM_PROFILE, region_name=region)


def ensure_keys(group_data: Path = DEFAULT_GROUP_DATA) -> list[Path]:
    """Make each sim environment's SSH key pair where neither file exists yet (ed25519).

    Only for the stand-in: an AWS environment's key is the operator's own. Returns the
    private keys made.
    """
    made = []
    for env in sim_environments(group_data).values():
        public = Path(env.ssh_public_key).expanduser()
        if env.ssh_public_key.strip().startswith(("ssh-", "ecdsa-")) or not env.ssh_private_key:
            continue
        private = Path(env.ssh_private_key).expanduser()
        if public.exists() or private.exists():
            continue
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_key_pair(private, public)
        made.append(private)
    return made


def _write_key_pair(private: Path, public: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    fd = os.open(private, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
    text = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public.write_text(f"{text.decode()} maha-sim\n")


def remove_hosts(token: str) -> list[str]:
    """Remove the hosts, networks and EBS volume store the server ``token`` made; the
    hosts' names."""
    from docker.errors import APIError, NotFound

    from mahaops.local.engine import ensure_engine
    from mahaops.sim import LABEL_SERVER

    client = ensure_engine()
    selector = {"label": [f"{LABEL_SERVER}={token}"]}
    removed = []
    for container in client.containers.list(all=True, filters=selector):
        container.remove(force=True)
        removed.append(container.name)
    for network in client.networks.list(filters=selector):
        with contextlib.suppress(NotFound, APIError):  # gone already, or another host's
            network.remove()
    for volume in client.volumes.list(filters=selector):  # the EBS volumes' data
        with contextlib.suppress(NotFound, APIError):
            volume.remove(force=True)
    return removed
