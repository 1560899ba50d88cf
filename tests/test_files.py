"""m6rec.utils.files: atomic writes keep the old file on failure and land with the umask's mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m6rec.utils.files import atomic_dir, atomic_path, write_text_atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "cache.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_files_and_directories_get_the_umask_mode_not_tempfiles_private_one(tmp_path: Path, umask_027):
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027 (mkstemp alone gives 0o600)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750  # 0o777 & ~0o027 (mkdtemp alone gives 0o700)
    assert (tmp_path / "d" / "f").read_text() == "y"


def test_the_umask_is_read_without_setting_it(umask_027, monkeypatch: pytest.MonkeyPatch):
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc: the umask is read by setting and restoring it")
    from m6rec.utils import files

    def no_set(mask: int) -> int:
        raise AssertionError("os.umask called: another thread could create files under 0o022 meanwhile")

    monkeypatch.setattr(files.os, "umask", no_set)
    assert files._umask() == 0o027
