"""The apt signing-key check (operations/aptkeys.py), run as the hosts run it (sh, gpg)
on keys made here: the pinned key passes, any other key, a second key beside the pinned
one, or no pin at all fails naming the repository and the setting, and leaves no key."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from operations.aptkeys import fingerprint_check

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")


def _gpg(home: Path, *args: str) -> str:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str]]]:
    """Two vendors' keys: name -> (armored public key, fingerprint)."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    made = {}
    for name in ("vendor", "intruder"):
        _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.test>",
             "ed25519", "sign", "never")  # fmt: skip
        colons = _gpg(home, "--with-colons", "--list-keys", f"{name}@example.test")
        fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        made[name] = (_gpg(home, "--armor", "--export", fpr), fpr)
    yield made
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def check(tmp_path: Path, content: str, pin: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    keyring = tmp_path / "vendor.asc"
    keyring.write_text(content)
    command = fingerprint_check(str(keyring), pin, "Vendor repo", "vendor_key_fingerprint")
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=False,
        env={**os.environ, "GNUPGHOME": str(tmp_path / "empty")},
    )  # fmt: skip
    return done, keyring


def test_the_pinned_key_is_kept(tmp_path: Path, keys: dict[str, tuple[str, str]]) -> None:
    armored, fpr = keys["vendor"]
    done, keyring = check(tmp_path, armored, fpr)
    assert done.returncode == 0, done.stderr
    assert keyring.read_text() == armored


@pytest.mark.parametrize(
    "served",
    ["intruder", "both", "garbage", "empty"],
)
def test_any_other_key_file_is_refused_naming_the_repository(
    tmp_path: Path, keys: dict[str, tuple[str, str]], served: str
) -> None:
    content = {
        "intruder": keys["intruder"][0],
        "both": keys["vendor"][0] + keys["intruder"][0],  # a second key would be trusted too
        "garbage": "<html>not a key</html>\n",
        "empty": "",
    }[served]
    done, keyring = check(tmp_path, content, keys["vendor"][1])
    assert done.returncode != 0
    assert "Vendor repo" in done.stderr and "vendor_key_fingerprint" in done.stderr
    assert keys["vendor"][1] in done.stderr
    if served == "intruder":
        assert keys["intruder"][1] in done.stderr  # what was found instead
    assert not keyring.exists(), "a refused key must not stay where apt would read it"


def test_no_pin_refuses_every_key(tmp_path: Path, keys: dict[str, tuple[str, str]]) -> None:
    done, keyring = check(tmp_path, keys["vendor"][0], "")
    assert done.returncode != 0 and "none pinned" in done.stderr
    assert not keyring.exists()


def test_a_malformed_pin_is_refused_before_any_host() -> None:
    with pytest.raises(ValueError, match="vendor_key_fingerprint"):
        fingerprint_check(
            "/etc/apt/keyrings/v.asc", "b97b 0afc", "Vendor", "vendor_key_fingerprint"
        )


def _fact(path: Path) -> list[str] | None:
    """The KeyFingerprints fact, its command run by sh as on a host and its output parsed."""
    from operations.facts import KeyFingerprints

    fact = KeyFingerprints()
    out = subprocess.run(
        ["sh", "-c", fact.command(str(path))], capture_output=True, text=True, check=True
    ).stdout
    return fact.process(out.splitlines())


def test_the_fact_reads_a_key_in_place_so_a_stale_one_is_fetched_again(
    tmp_path: Path, keys: dict[str, tuple[str, str]]
) -> None:
    keyring = tmp_path / "vendor.asc"
    assert _fact(keyring) is None  # nothing there: download as usual
    keyring.write_text(keys["intruder"][0])
    assert _fact(keyring) == [keys["intruder"][1]]  # not the pin: fetched and checked again
    keyring.write_text(keys["vendor"][0] + keys["intruder"][0])
    assert _fact(keyring) == [keys["vendor"][1], keys["intruder"][1]]
    keyring.write_text("not a key\n")
    assert _fact(keyring) == []  # nothing readable matches any pin either
