"""_utils/rolestack_extmods.py: the master's and a minion's digests of the synced extension modules agree exactly
when the minion holds what the master serves."""

import os

import rolestack_extmods as extmods


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def served(tmp_path, *roots):
    return extmods.served_dirs({"file_roots": {"base": [str(tmp_path / root) for root in roots]}})


def test_the_minions_copy_of_what_the_master_serves_has_the_masters_digest(tmp_path):
    write(tmp_path / "srv/_modules/a.py", "A")
    write(tmp_path / "srv/_utils/u.py", "U")
    write(tmp_path / "srv/_states/s.py", "S")
    write(tmp_path / "srv/_states/README.md", "not synced")
    write(tmp_path / "srv/_grains/g.py", "another kind")
    write(tmp_path / "ext/modules/a.py", "A")
    write(tmp_path / "ext/utils/u.py", "U")
    write(tmp_path / "ext/states/s.py", "S")
    write(tmp_path / "ext/states/__pycache__/s.cpython-311.pyc", "compiled")
    local = extmods.digest(extmods.local_dirs(str(tmp_path / "ext")))
    assert extmods.digest(served(tmp_path, "srv")) == local


def test_a_changed_missing_extra_or_moved_file_changes_the_digest(tmp_path):
    write(tmp_path / "srv/_modules/a.py", "A")
    before = extmods.digest(served(tmp_path, "srv"))
    write(tmp_path / "srv/_modules/a.py", "A2")
    changed = extmods.digest(served(tmp_path, "srv"))
    write(tmp_path / "srv/_modules/b.py", "B")
    extra = extmods.digest(served(tmp_path, "srv"))
    os.remove(tmp_path / "srv/_modules/b.py")
    write(tmp_path / "srv/_states/a.py", "A2")
    os.remove(tmp_path / "srv/_modules/a.py")
    moved = extmods.digest(served(tmp_path, "srv"))
    assert len({before, changed, extra, moved}) == 4


def test_the_first_file_root_holding_a_path_wins(tmp_path):
    write(tmp_path / "first/_modules/a.py", "A")
    write(tmp_path / "second/_modules/a.py", "other")
    write(tmp_path / "only/_modules/a.py", "A")
    assert extmods.digest(served(tmp_path, "first", "second")) == extmods.digest(served(tmp_path, "only"))
    assert extmods.digest(served(tmp_path, "second", "first")) != extmods.digest(served(tmp_path, "only"))


def test_no_digest_for_a_master_serving_through_another_backend(tmp_path):
    opts = {"file_roots": {"base": [str(tmp_path)]}}
    assert extmods.served_dirs({**opts, "fileserver_backend": ["gitfs", "roots"]}) is None
    assert extmods.served_dirs({**opts, "fileserver_backend": ["roots"]}) is not None
    assert extmods.served_dirs(opts) is not None  # roots is salt's default
