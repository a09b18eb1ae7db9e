"""pipelines.faults: a machine fault anywhere in an exception's chain of causes is one line."""

from __future__ import annotations

import sqlite3

import pytest

from pipelines.faults import explain


def _full_disk_error() -> OSError:
    try:
        with open("/dev/full", "w") as f:  # a real device that answers every write with ENOSPC
            f.write("x")
    except OSError as err:
        return err
    pytest.fail("/dev/full accepted a write")


def test_a_full_disk_deep_in_a_chain_of_causes_is_found():
    try:
        try:
            raise _full_disk_error()
        except OSError as inner:
            raise RuntimeError("dvc push failed") from inner
    except RuntimeError as outer:
        line = explain(outer)
    assert line is not None and "no space left on device" in line


def test_a_read_only_sqlite_write_is_told_by_its_text(tmp_path):
    path = tmp_path / "x.db"
    sqlite3.connect(path).execute("CREATE TABLE t (a)").connection.commit()
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as info:
        db.execute("INSERT INTO t VALUES (1)")
    assert "read-only file system" in explain(info.value)


def test_an_ordinary_bug_is_left_to_the_traceback():
    assert explain(KeyError("x")) is None
    assert explain(OSError(2, "No such file or directory", "f")) is None
