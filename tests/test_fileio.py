"""Files written through vfjax.fileio: whole, and readable as the umask allows."""

import contextlib
import os
import stat

import pytest

from vfjax import fileio


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_written_files_get_the_permissions_the_umask_allows(tmp_path, mask):
    """As `open()` gives them (0666 less the umask), not a temporary file's 0600; a file written
    again (an existing file replaced) too, and no temporary file is left behind."""
    with _umask(mask):
        opened = tmp_path / "opened"
        opened.write_text("x")
        fileio.write_json(tmp_path / "config.json", {"a": 1})
        fileio.save_npy(tmp_path / "sub" / "values.npy", [1.0, 2.0])
        with fileio.local_file_for_writing(tmp_path / "video.gif") as local:
            with open(local, "wb") as f:
                f.write(b"GIF")
        fileio.write_json(tmp_path / "config.json", {"a": 2})
    expected = 0o666 & ~mask
    assert _mode(opened) == expected
    for name in ("config.json", "sub/values.npy", "video.gif"):
        assert _mode(tmp_path / name) == expected, name
    assert fileio.read_json(tmp_path / "config.json") == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["config.json", "opened", "sub", "video.gif"]


def test_a_replaced_file_takes_the_umask_of_its_writer(tmp_path):
    """A file written 0600 before (by the temporary file of an older vfjax) is readable after it is
    written again, with its new contents."""
    target = tmp_path / "config.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    with _umask(0o022):
        fileio.write_text(target, '{"b": 1}')
    assert _mode(target) == 0o644
    assert fileio.read_json(target) == {"b": 1}


def test_the_umask_is_read_without_changing_it(monkeypatch):
    """From /proc where Linux has it, else by setting and restoring it once; either way the
    process's umask is left as it was."""
    with _umask(0o027):
        assert fileio._umask() == 0o027
        monkeypatch.setattr(fileio, "_PROC_STATUS", "/nonexistent/status")
        fileio._umask_by_setting.cache_clear()
        try:
            assert fileio._umask() == 0o027
            assert os.umask(0o027) == 0o027
        finally:
            fileio._umask_by_setting.cache_clear()
