"""Safe unpacking of an uploaded round archive (`.tar.gz` or `.zip`).

The archive type is sniffed from its first bytes, never trusted from a file
name. Every member is checked *before* anything is written:

- only regular files and folders; symlinks, hard links, devices and FIFOs are
  refused (a link could point a later write outside the destination);
- names must be relative, use '/', and contain no `..` (path traversal);
- pickle files (`.bin`, `.pt`, `.pkl`, ...) are refused, never unpacked;
- the declared uncompressed total must fit `max_bytes` (archive bombs), and
  the bytes actually written are counted again while copying, since a
  member's header can lie.

Files are then copied member by member; nothing is extracted by the library's
own `extractall`. The round folder is the archive root or its single
top-level folder, whichever holds `manifest.json`.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import InvalidInput, MalformedArchive

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    name: str
    is_dir: bool
    size: int


def unpack_round_archive(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack `archive` into the empty folder `dest`; return the folder holding manifest.json."""
    kind = sniff_archive(archive)
    try:
        if kind == "zip":
            _unpack_zip(archive, dest, max_bytes)
        else:
            _unpack_tar(archive, dest, max_bytes)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise MalformedArchive("malformed_archive", f"the archive is corrupt or truncated: {exc}") from None
    return round_root(dest)


def sniff_archive(archive: Path) -> str:
    with archive.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head == b"PK\x03\x04":
        return "zip"
    raise MalformedArchive(
        "malformed_archive", "the upload is neither a .tar.gz nor a .zip archive", field="archive"
    )


def check_members(members: list[Member], max_bytes: int) -> None:
    total = 0
    for member in members:
        check_member_name(member.name)
        total += member.size
    if total > max_bytes:
        raise MalformedArchive(
            "archive_too_large", f"the archive unpacks to {total} bytes, more than the limit of {max_bytes}"
        )


def check_member_name(name: str) -> None:
    pure = PurePosixPath(name)
    if "\\" in name or pure.is_absolute() or re.match(r"[A-Za-z]:", name):
        raise MalformedArchive("unsafe_archive_member", f"archive member {name!r} has an absolute path")
    if ".." in pure.parts:
        raise MalformedArchive("unsafe_archive_member", f"archive member {name!r} escapes the archive with '..'")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise InvalidInput(
            "pickle_refused", f"archive member {name!r} is a pickle file; only safetensors are accepted"
        )


def round_root(dest: Path) -> Path:
    if (dest / "manifest.json").is_file():
        return dest
    children = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and (children[0] / "manifest.json").is_file():
        return children[0]
    raise InvalidInput(
        "missing_manifest", "the archive holds no manifest.json at its root or in a single top-level folder"
    )


def _unpack_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    with tarfile.open(archive, mode="r:gz") as tar:
        infos = tar.getmembers()
        for info in infos:
            if not (info.isreg() or info.isdir()):
                raise MalformedArchive(
                    "unsafe_archive_member",
                    f"archive member {info.name!r} is a link or special file; only files and folders are accepted",
                )
        check_members([Member(i.name, i.isdir(), i.size) for i in infos], max_bytes)
        budget = _Budget(max_bytes)
        for info in infos:
            source = None if info.isdir() else tar.extractfile(info)
            _write_member(dest, info.name, source, budget)


def _unpack_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise MalformedArchive(
                    "unsafe_archive_member",
                    f"archive member {info.filename!r} is a link or special file; only files and folders are accepted",
                )
        check_members([Member(i.filename, i.is_dir(), i.file_size) for i in infos], max_bytes)
        budget = _Budget(max_bytes)
        for info in infos:
            if info.is_dir():
                _write_member(dest, info.filename, None, budget)
            else:
                with zf.open(info) as source:
                    _write_member(dest, info.filename, source, budget)


class _Budget:
    """Counts bytes actually written, because a member header may understate its size."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise MalformedArchive("archive_too_large", "the archive unpacks to more than the size limit")


def _write_member(dest: Path, name: str, source: BinaryIO | None, budget: _Budget) -> None:
    target = dest.joinpath(*PurePosixPath(name).parts)
    if source is None:
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            budget.spend(len(chunk))
            out.write(chunk)


