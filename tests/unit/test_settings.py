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


@pytest.mark.parametrize(
    ("file", "line", "key"),
    [
        ("all.py", "base_ssh_port = True", "base_ssh_port"),  # not the port 1
        ("all.py", "base_ssh_port = 22.0", "base_ssh_port"),
        ("all.py", "base_firewall = 0", "base_firewall"),  # not False
        ("all.py", "base_unattended_upgrades = 'yes'", "base_unattended_upgrades"),
        ("all.py", "base_sysctl_extra = {'vm.swappiness': True}", "base_sysctl_extra"),
        ("workers.py", "worker_concurrency = '4'", "worker_concurrency"),
    ],
)
def test_no_value_is_coerced(tmp_path: Path, file: str, line: str, key: str) -> None:
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, file, line))
    assert err.value.source.endswith(file) and err.value.key == key


@pytest.mark.parametrize(
    ("file", "line", "key", "where"),
    [
        ("cache_servers.py", "redis_save = '60 1\\nrename-command CONFIG x'", "redis_save", ""),
        ("all.py", "base_ntp_servers = ['a.example', 'b.example\\r']", "base_ntp_servers", "[1]"),
        ("all.py", "base_sysctl_extra = {'vm.swappiness': '1\\x00'}", "base_sysctl_extra", ""),
        ("all.py", "base_sysctl_extra = {'vm.swappiness\\n': 1}", "base_sysctl_extra", ""),
        ("all.py", "base_timezone = 'Etc/UTC\\x1b[2J'", "base_timezone", ""),
        (
            "local.py",
            "base_admin_users = [{'name': 'ann', 'public_keys': ['ssh-ed25519 AAAA\\nx']}]",
            "base_admin_users",
            "[0]['public_keys'][0]",
        ),
    ],
)
def test_control_characters_are_refused(
    tmp_path: Path, file: str, line: str, key: str, where: str
) -> None:
    """A newline would write a second directive (or sysctl) into the file the value lands in."""
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, file, line))
    assert err.value.source.endswith(file) and err.value.key == key
    assert "control character" in err.value.message and f"{key}{where}" in err.value.message


def test_command_line_overrides_are_strict_and_single_line() -> None:
    with pytest.raises(SettingsError) as err:
        parse_overrides(["base_ssh_port=true"])
    assert err.value.key == "base_ssh_port"
    with pytest.raises(SettingsError) as err:
        parse_overrides(['redis_save="60 1\\nappendonly no"'])
    assert err.value.key == "redis_save" and "control character" in err.value.message
    assert parse_overrides(["redis_save=60 1"]) == {"redis_save": "60 1"}


def test_an_app_env_value_the_shell_would_run_is_refused(tmp_path: Path) -> None:
    line = "app_env = {'FEATURE': 'on; touch /tmp/owned'}"
    with pytest.raises(SettingsError) as err:
        GroupData(_group_data(tmp_path, "app_servers.py", line))
    assert err.value.key == "app_env" and "FEATURE: ';'" in err.value.message


def test_every_accepted_app_env_value_means_to_the_migrations_shell_what_it_says(
    tmp_path: Path,
) -> None:
    """maha.env is sourced by sh before migrations (operations/release.py): each value the
    settings accept, in every printable character, is read back literally and runs nothing."""
    import json
    import subprocess

    from mahaops.settings.app import ReleaseSettings
    from mahaops.templating import render

    candidates = {
        f"V{i}_{where}": text
        for i, char in enumerate(map(chr, range(0x20, 0x7F)))
        for where, text in (("IN", f"a{char}b"), ("AT", f"{char}b"), ("END", f"a{char}"))
    }
    accepted = {}
    for name, text in candidates.items():
        try:
            ReleaseSettings(app_env={name: text})
        except ValueError:
            continue
        accepted[name] = text
    # All but the 14 refused characters (each in 3 places): '/', '*', '#', '=', '%'... pass.
    assert len(accepted) == 3 * (95 - 14) and "V27_IN" not in accepted  # ';' is 0x3B
    env_file = tmp_path / "maha.env"
    env_file.write_text(
        render(
            "app/maha.env.j2",
            app_user="maha-app",
            app_database_url="postgres://u:p@db:5432/maha",
            app_redis_url="redis://:p@cache:6379/0",
            app_queue_url="redis://:p@cache:6380/0",
            app_pg_pool_max=10,
            app_env=accepted,
        )
    )
    read = subprocess.run(
        [
            "/bin/sh",
            "-c",
            "set -a; . ./maha.env; set +a; exec python3 -c "
            "'import json, os; print(json.dumps(dict(os.environ)))'",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert read.stderr == ""
    environment = json.loads(read.stdout)
    assert {name: environment.get(name) for name in accepted} == accepted
    assert sorted(tmp_path.iterdir()) == [env_file]  # nothing ran
