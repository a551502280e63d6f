"""A secret's digest is secret too: the Redis ACL's password digests are masked in what the
tools print and are never written into the Ansible export, which computes them on the
control node from the secrets' lookups (host-free: the cache deploy's own template
variables, exported by hand-made calls)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from deploys import cache
from mahaops import masking
from mahaops.ansible_export.model import Call, Host
from mahaops.ansible_export.project import Recording, SecretSource, build
from mahaops.settings import GroupData
from mahaops.settings.cache import RedisClientSettings, RedisSettings

SECRETS = {"redis_password": "client-Pass-4a9f1c", "redis_admin_password": "admin-Pass-77e0b2"}
DIGESTS = {name: hashlib.sha256(value.encode()).hexdigest() for name, value in SECRETS.items()}
HOST = Host("cache-1", ("local", "cache_servers"), {"ansible_host": "127.0.0.1"}, {})


@pytest.fixture
def cache_vars(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The variables the cache deploy gives its templates, for SECRETS."""
    monkeypatch.setattr(cache, "secret", SECRETS.__getitem__)
    monkeypatch.setattr(cache, "host", SimpleNamespace(data={"private_address": "10.9.0.5"}))
    s, ports = RedisSettings(), RedisClientSettings()
    return {
        **cache.template_vars(s, ports, in_container=True),
        **cache.instances(s, ports)["cache"],
    }


def test_the_digests_are_masked_wherever_they_are_printed(cache_vars: dict[str, Any]) -> None:
    line = f"-user default on #{DIGESTS['redis_password']} ~* &* +@all -flushall"
    assert masking.mask(line) == f"-user default on #{masking.MASK} ~* &* +@all -flushall"
    assert DIGESTS["redis_admin_password"] not in masking.mask(str(cache_vars))


def test_the_export_computes_the_digests_from_the_lookups_and_never_writes_them(
    cache_vars: dict[str, Any],
) -> None:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    conf = Call(
        host=HOST.name,
        role="cache",
        op_hash="h1",
        operation="files.template",
        name="Configure Redis (bind, auth, memory, AOF)",
        location="deploys/cache.py:99",
        arguments={
            "src": "cache/redis.conf.j2",
            "dest": "/etc/redis/redis.conf",
            "user": "redis",
            "group": "redis",
            "mode": "640",
            "create_remote_dir": True,
            "jinja_env_kwargs": {"trim_blocks": True},
            "data": cache_vars,
        },
        defaults={},
    )
    files = build(
        Recording(
            env="t1",
            kind="local",
            roles=["cache"],
            hosts=[HOST],
            calls=[conf],
            secrets=dict(SECRETS),
            group_data=GroupData(),
            secret_source=SecretSource("local", "t1", "/home/op/.local/share/maha/t1/secrets.json"),
        ),
        lambda _name: None,
    )
    for path, content in files.items():
        for name, value in [*SECRETS.items(), *DIGESTS.items()]:
            assert value.encode() not in content, f"{name} written to {path}"

    # What the playbook renders into redis.conf: the same digests, from the lookups.
    group_vars = yaml.safe_load(files["group_vars/cache_servers.yml"])
    templar = Templar(
        loader=DataLoader(), variables={f"maha_secret_{n}": v for n, v in SECRETS.items()}
    )
    for name in SECRETS:
        exported = group_vars[f"{name}_sha256"]
        assert templar.template(trust_as_template(exported)) == DIGESTS[name]
