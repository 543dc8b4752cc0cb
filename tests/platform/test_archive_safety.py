"""Unpacking uploaded archives refuses every unsafe member before writing anything."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from registry.archive import unpack_round_archive
from registry.errors import InvalidInput, MalformedArchive


def _tar(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _unpack(tmp_path: Path, archive: Path, max_bytes: int = 10_000) -> Path:
    dest = tmp_path / "out"
    dest.mkdir()
    return unpack_round_archive(archive, dest, max_bytes=max_bytes)


def test_it_unpacks_a_round_in_a_single_top_level_folder(tmp_path):
    archive = _tar(tmp_path, [_file("r/manifest.json", b'{"a": 1}'), _file("r/global/x.txt", b"abc")])
    root = _unpack(tmp_path, archive)
    assert root.name == "r"
    assert (root / "manifest.json").read_bytes() == b'{"a": 1}'
    assert (root / "global" / "x.txt").read_bytes() == b"abc"


@pytest.mark.parametrize(
    "name, message",
    [("../evil.json", "escapes the archive"), ("/etc/evil", "absolute path"), ("a/../../evil", "escapes the archive")],
)
def test_it_refuses_path_traversal_in_tar(tmp_path, name, message):
    archive = _tar(tmp_path, [_file("manifest.json"), _file(name)])
    with pytest.raises(MalformedArchive, match=message) as exc:
        _unpack(tmp_path, archive)
    assert exc.value.code == "unsafe_archive_member"
    assert not (tmp_path / "evil.json").exists()
    assert list((tmp_path / "out").iterdir()) == []  # nothing was written


@pytest.mark.parametrize(
    "kind, linkname", [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "manifest.json"), (tarfile.CHRTYPE, ""),
                       (tarfile.FIFOTYPE, "")]
)
def test_it_refuses_links_and_special_files_in_tar(tmp_path, kind, linkname):
    archive = _tar(tmp_path, [_file("manifest.json"), _special("global/link", kind, linkname)])
    with pytest.raises(MalformedArchive, match="link or special file") as exc:
        _unpack(tmp_path, archive)
    assert exc.value.code == "unsafe_archive_member"


def test_it_refuses_a_symlink_in_zip(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "{}")
        link = zipfile.ZipInfo("global/link")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(MalformedArchive, match="link or special file"):
        _unpack(tmp_path, path)


def test_it_refuses_zip_traversal(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("../../evil", "x")
    with pytest.raises(MalformedArchive, match="escapes the archive"):
        _unpack(tmp_path, path)


@pytest.mark.parametrize("name", ["clients/a/pytorch_model.bin", "global/w.pt", "x.pkl"])
def test_it_refuses_pickle_files(tmp_path, name):
    archive = _tar(tmp_path, [_file("manifest.json"), _file(name, b"\x80\x04")])
    with pytest.raises(InvalidInput, match="pickle file") as exc:
        _unpack(tmp_path, archive)
    assert exc.value.code == "pickle_refused"


def test_it_refuses_an_archive_that_unpacks_past_the_limit(tmp_path):
    archive = _tar(tmp_path, [_file("manifest.json"), _file("big", b"\0" * 5000)])
    with pytest.raises(MalformedArchive, match="more than the limit of 1000") as exc:
        _unpack(tmp_path, archive, max_bytes=1000)
    assert exc.value.code == "archive_too_large"


@pytest.mark.parametrize("data", [b"not an archive at all", b"\x1f\x8b\x08\x00garbage-gzip", b"PK\x03\x04truncated"])
def test_it_reports_malformed_archives(tmp_path, data):
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(data)
    with pytest.raises(MalformedArchive) as exc:
        _unpack(tmp_path, path)
    assert exc.value.code == "malformed_archive"


def test_it_requires_a_manifest(tmp_path):
    archive = _tar(tmp_path, [_file("a/x.json"), _file("b/y.json")])
    with pytest.raises(InvalidInput, match="no manifest.json") as exc:
        _unpack(tmp_path, archive)
    assert exc.value.code == "missing_manifest"
