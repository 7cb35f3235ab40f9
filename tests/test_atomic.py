"""fastsae.atomic: a file is its old content or its whole new content, and no temporary file is left."""

import json

import pytest

from fastsae.atomic import atomic_path, write_atomic, write_json_atomic


def test_writes_text_bytes_json_and_callables(tmp_path):
    write_atomic(tmp_path / "a.txt", "hello")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_json_atomic(tmp_path / "c.json", {"x": [1, 2]})
    write_atomic(tmp_path / "d.txt", lambda p: p.write_text("made by a writer"))
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "d.txt").read_text() == "made by a writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json", "d.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"step": 1})

    def half_then_fail(p):
        p.write_text('{"step": 2, "trunc')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, half_then_fail)
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise ValueError("writer failed")
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
