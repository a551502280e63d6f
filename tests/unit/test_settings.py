"""Bad settings stop the run with the file and the key, before anything else happens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.settings import GroupData, SettingsError, parse_overrides


def _group_data(tmp_path: Path, file: str, line: str) -> Path:
    target = tmp_path / "group_data"
    shutil.copytree(PROJECT_ROOT / "group_data", target)
    with (target / file).open("a") as handle:
        handle.write("\n" + line + "\n")
    return target


def test_project_group_data_is_valid() -> None:
    data = GroupData()
    assert "all" in data.files and "local" in data.files


def test_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, "all.py", "base_ssh_port = 'twenty-two'"))
    assert err.value.source == "group_data/all.py" or err.value.source.endswith("all.py")
    assert err.value.key == "base_ssh_port"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, "all.py", "base_timezon = 'UTC'"))
    assert err.value.key == "base_timezon"
    assert "did you mean 'base_timezone'" in str(err.value)


def test_bad_cidr_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, "local.py", "base_admin_cidrs = ['10.0.0.0/33']"))
    assert err.value.key == "base_admin_cidrs"
    assert "CIDR" in str(err.value)


def test_command_line_overrides_are_checked_too() -> None:
    assert parse_overrides(["base_ssh_max_auth_tries=2"]) == {"base_ssh_max_auth_tries": 2}
    with pytest.raises(SettingsError) as err:
        parse_overrides(["base_ssh_max_auth_tries=99"])
    assert err.value.source == "--set" and err.value.key == "base_ssh_max_auth_tries"
    with pytest.raises(SettingsError):
        parse_overrides(["no_such_setting=1"])
