"""release-history stays bounded (issue 14): the newest ``keep`` switches are kept, and
every line of the releases ``current`` and ``previous`` name however old; what rollback
reads (the newest line) never changes. The commands run under /bin/sh on a real tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

from operations.release import HISTORY, HistoryTrimmable, Releases, history_trim_command


def sh(command: str) -> str:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout


def root_with_history(tmp_path: Path, switches: int, current: str, previous: str) -> Path:
    (tmp_path / "releases").mkdir()
    (tmp_path / "current").symlink_to(f"releases/{current}")
    (tmp_path / "previous").symlink_to(f"releases/{previous}")
    lines = [f"{1000 + i} r{i:02d} r{i - 1:02d}\n" for i in range(1, switches + 1)]
    (tmp_path / HISTORY).write_text("".join(lines))
    return tmp_path


def excess(root: Path, keep: int) -> int:
    fact = HistoryTrimmable()
    return fact.process(sh(fact.command(str(root), keep)).splitlines())


def newest(root: Path) -> tuple[str | None, str | None]:
    state = Releases().process(sh(Releases().command(str(root))).splitlines())
    return state.last_release, state.last_before


def test_old_switches_go_but_never_those_of_current_and_previous(tmp_path: Path) -> None:
    # A rollback went back to r03: its switch line is old, and it must stay.
    root = root_with_history(tmp_path, 30, current="r03", previous="r30")
    before = newest(root)
    assert excess(root, 5) == 24

    assert sh(history_trim_command(5, str(root))).strip() == f"trimmed {HISTORY}"

    kept = [line.split()[1] for line in (root / HISTORY).read_text().splitlines()]
    assert kept == ["r03", "r26", "r27", "r28", "r29", "r30"]
    assert newest(root) == before == ("r30", "r29")  # what rollback reads
    assert excess(root, 5) == 0
    assert sh(history_trim_command(5, str(root))) == ""  # a second trim changes nothing
    assert not (root / f"{HISTORY}.maha-new").exists()


def test_a_short_history_or_none_is_left_alone(tmp_path: Path) -> None:
    root = root_with_history(tmp_path, 3, current="r03", previous="r02")
    assert excess(root, 5) == 0
    assert sh(history_trim_command(5, str(root))) == ""
    assert len((root / HISTORY).read_text().splitlines()) == 3
    assert excess(tmp_path / "absent", 5) == 0
    assert sh(history_trim_command(5, str(tmp_path / "absent"))) == ""
