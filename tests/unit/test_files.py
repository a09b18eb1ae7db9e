"""write_atomic: the new content whole or the old one, never part of one, and no temporary file
left behind by a write that failed."""

import pytest

from components.files import write_atomic


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "point.json"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["point.json"]


def test_a_failed_write_keeps_what_was_there_and_cleans_up(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):  # a file cannot be renamed over a folder
        write_atomic(target, "x")
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
