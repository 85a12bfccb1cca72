"""Every tracked text file is free of merge conflict markers (a merge once committed docs/lab.md with both sides)."""

import re
import subprocess

from tests.support.paths import REPO

MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_merge_conflict_markers():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        found += [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}" for m in MARKER.finditer(text)]
    assert not found, found
