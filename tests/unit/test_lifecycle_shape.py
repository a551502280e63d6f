"""The local platform's shape comes from group_data/local.py and is checked before use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.lifecycle import plan
from mahaops.local import platform
from mahaops.settings import GroupData, SettingsError, parse_overrides
from mahaops.settings.local import check_shape


def _group_data(tmp_path: Path, line: str) -> Path:
    target = tmp_path / "group_data"
    shutil.copytree(PROJECT_ROOT / "group_data", target)
    with (target / "local.py").open("a") as handle:
        handle.write("\n" + line + "\n")
    return target


def test_the_shape_is_read_from_local_py(tmp_path: Path) -> None:
    assert platform.shape() == {
        "lb": 1,
        "app": 2,
        "db": 1,
        "cache": 1,
        "log": 1,
        "mail": 1,
        "storage": 1,
        "worker": 1,
    }
    data = GroupData(_group_data(tmp_path, 'local_hosts = {"app": 3, "db": 1, "cache": 1}'))
    assert platform.shape(data) == {"app": 3, "db": 1, "cache": 1}
    assert dict(platform.PLATFORM)["app"] == 2  # the old constant's name, now from settings


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"app": 2, "db": 1, "cache": 1, "smtp": 1}', "smtp"),  # no such role
        ('{"app": -1, "db": 1, "cache": 1}', "app: -1 hosts"),
        ('{"app": 2, "db": 2, "cache": 1}', "at most one db"),
        ('{"app": 2, "db": 1, "cache": 1, "lb": 2}', "at most one lb"),
        ('{"app": 2, "db": 1, "cache": 1, "log": 3}', "at most one log"),
        ('{"app": 2, "cache": 1}', "app hosts need a db host"),
        ('{"worker": 1, "db": 1}', "worker hosts need a cache host"),
        ('{"app": True, "db": 1, "cache": 1}', "integer"),  # strict: True is not 1
        ('{"app": "2", "db": 1, "cache": 1}', "integer"),
    ],
)
def test_a_bad_shape_stops_naming_local_py_and_the_key(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, f"local_hosts = {value}"))
    assert err.value.source == "group_data/local.py" or err.value.source.endswith("local.py")
    assert err.value.key == "local_hosts"
    assert message in str(err.value)


def test_the_shape_belongs_to_the_local_overlay_only(tmp_path: Path) -> None:
    target = _group_data(tmp_path, "")
    with (target / "all.py").open("a") as handle:
        handle.write('\nlocal_hosts = {"app": 1, "db": 1, "cache": 1}\n')
    with pytest.raises(SettingsError) as err:
        GroupData(target)
    assert err.value.key == "local_hosts" and "unknown setting" in str(err.value)


def test_set_overrides_are_checked_too() -> None:
    with pytest.raises(SettingsError) as err:
        parse_overrides(['local_hosts={"app": 1, "db": 2, "cache": 1}'])
    assert err.value.key == "local_hosts"


def test_scaling_is_held_to_the_same_rules() -> None:
    # What `invoke scale` would leave is checked like the file: no second db, no app alone.
    hosts = [plan.Existing("db-1", "db", True), plan.Existing("app-1", "app", True)]
    with pytest.raises(ValueError, match="at most one db"):
        check_shape(plan.shape_after(plan.scale("db", 2, hosts), hosts))
    with pytest.raises(ValueError, match="need a cache host"):
        check_shape(plan.shape_after(plan.scale("app", 2, hosts), hosts))
