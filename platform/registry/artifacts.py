"""Round files in the `artifacts` storage (Django's storage API).

Rounds are written once under ``rounds/<federation>/round-<n>-<random>/`` and
never modified, so a local copy of one never goes stale. The engine needs a
real folder: a storage with local paths (FileSystemStorage, the default)
hands out its own path; any other backend (S3 and friends) is copied once into
ARTIFACT_CACHE_DIR, and a `.complete` marker written last makes a half-finished
copy (a crashed worker) be redone rather than trusted.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

from .errors import InvalidInput, NotFound

COMPLETE_MARKER = ".complete"


def artifact_storage() -> Storage:
    return storages["artifacts"]


def new_round_prefix(*, federation_slug: str, number: int) -> str:
    return f"rounds/{federation_slug}/round-{number:05d}-{uuid.uuid4().hex[:12]}"


def store_folder(*, src: Path, prefix: str, overrides: dict[str, bytes] | None = None) -> tuple[list[str], int]:
    """Copy every file under `src` to storage under `prefix`; return (relative names, total bytes).

    `overrides` maps a relative name to the bytes to store instead of the file's own.
    """
    overrides = overrides or {}
    names, total = [], 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        if rel in overrides:
            total += _save(f"{prefix}/{rel}", ContentFile(overrides[rel], name=rel))
        else:
            with path.open("rb") as fh:
                total += _save(f"{prefix}/{rel}", File(fh, name=rel))
        names.append(rel)
    return names, total


def _save(name: str, content: File) -> int:
    saved = artifact_storage().save(name, content)
    if saved != name:  # the storage renamed it: the prefix was not fresh
        raise RuntimeError(f"artifact storage stored {name!r} as {saved!r}")
    return content.size


def stored_size(name: str) -> int:
    return artifact_storage().size(name)


def delete_folder(*, prefix: str, names: list[str]) -> None:
    storage = artifact_storage()
    for rel in names:
        storage.delete(f"{prefix}/{rel}")


def check_storage_path(path: str) -> str:
    """A storage name given by a user: relative, '/'-separated, no '..'."""
    pure = PurePosixPath(path.strip().strip("/"))
    if not path.strip() or path.strip().startswith("/") or ".." in pure.parts or "\\" in path:
        raise InvalidInput(
            "unsafe_path", f"path {path!r} must be a relative folder in the artifact store, without '..'", field="path"
        )
    return pure.as_posix()


def list_folder(prefix: str) -> list[str]:
    """Every file below `prefix` in storage, relative to it (recursive)."""
    storage = artifact_storage()
    if not storage.exists(prefix):
        raise NotFound("unknown_path", f"the artifact store has no folder {prefix!r}", field="path")
    out: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        dirs, files = storage.listdir(f"{prefix}/{rel}".rstrip("/"))
        out += [f"{rel}{name}" for name in files]
        stack += [f"{rel}{name}/" for name in dirs]
    return sorted(out)


def local_folder(*, prefix: str, names: list[str]) -> Path:
    """A local folder holding the round's files: the storage's own path, or a cached copy."""
    storage = artifact_storage()
    try:
        return Path(storage.path(prefix))
    except NotImplementedError:  # a remote backend: no local paths
        return _cached_copy(storage, prefix, names)


def _cached_copy(storage: Storage, prefix: str, names: list[str]) -> Path:
    target = Path(settings.ARTIFACT_CACHE_DIR) / prefix
    if (target / COMPLETE_MARKER).exists():
        return target
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for rel in names:
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(f"{prefix}/{rel}", "rb") as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
    (staging / COMPLETE_MARKER).touch()
    try:
        staging.rename(target)
    except OSError:  # another process finished first; theirs is equally good
        shutil.rmtree(staging, ignore_errors=True)
    return target
