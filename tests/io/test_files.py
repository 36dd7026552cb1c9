"""io/files.py's atomic writers leave files and folders as the umask says, like open and mkdir.

They used to create their temporary siblings with tempfile (0600 files, 0700 folders), so every
model directory, metric file and report came out private whatever the user's umask.
"""

import os
import stat

import pytest

from interactavatar.io.files import atomic_directory, atomic_path, write_bytes_atomic, write_text_atomic


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=lambda mask: f"umask-{mask:03o}")
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_follow_the_umask(tmp_path, umask):
    text_file = tmp_path / "new" / "metrics.json"
    write_text_atomic(text_file, "{}\n")
    write_bytes_atomic(tmp_path / "weights.bin", b"\0\1")
    with atomic_path(tmp_path / "video.mp4") as tmp:
        tmp.write_bytes(b"mp4")

    for written in (text_file, tmp_path / "weights.bin", tmp_path / "video.mp4"):
        assert mode(written) == 0o666 & ~umask, written
    assert mode(text_file.parent) == 0o777 & ~umask, "a missing parent folder is made as mkdir makes it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "video.mp4", "weights.bin"], "no temporary left"


def test_a_writer_that_replaces_the_temporary_file_still_gets_the_umask_mode(tmp_path, umask):
    import torch
    from safetensors.torch import load_file, save_file

    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        save_file({"weight": torch.ones(2)}, str(tmp))  # safetensors writes its own file, 0600
    assert mode(target) == 0o666 & ~umask
    assert torch.equal(load_file(str(target))["weight"], torch.ones(2))


def test_replacing_a_file_gives_it_the_umask_mode(tmp_path, umask):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o600)
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert mode(target) == 0o666 & ~umask


def test_atomic_directory_follows_the_umask(tmp_path, umask):
    target = tmp_path / "models" / "demo"
    with atomic_directory(target) as staging:
        (staging / "config.yaml").write_text("preset: tiny\n")
        write_text_atomic(staging / "sub" / "lineage.json", "{}\n")

    assert mode(target) == 0o777 & ~umask
    assert mode(target / "sub") == 0o777 & ~umask
    assert mode(target / "sub" / "lineage.json") == 0o666 & ~umask
    assert (target / "config.yaml").read_text() == "preset: tiny\n"


def test_a_failed_atomic_write_leaves_nothing(tmp_path, umask):
    target = tmp_path / "out.txt"
    target.write_text("kept")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "folder"):
        raise RuntimeError("writer failed")
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
