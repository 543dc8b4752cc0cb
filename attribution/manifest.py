"""Parse and validate a `protoken-round/1` manifest.json (see ROUND_FORMAT.md).

`parse_manifest` is a pure function from the decoded JSON object to a
`RoundManifest`; `load_manifest` reads the file, parses it, and checks that
every folder the manifest names stays inside the round folder once symlinks
are resolved. Both raise a `ManifestError` (or `UnsafePathError` for paths)
whose message names the offending key, e.g. ``clients[2].num_examples``.

Every key in the format's table is required (`format`, `federation`, `round`,
`base_model`, `kind`, `aggregation`, `global`, `clients`). Extra keys are
ignored but kept verbatim in `RoundManifest.raw` for provenance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from attribution.errors import ManifestError, MissingFileError, UnsafePathError
from attribution.snapshot_types import FORMAT, KINDS, RoundManifest

MANIFEST_NAME = "manifest.json"
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
REQUIRED_KEYS = ("format", "federation", "round", "base_model", "kind", "aggregation", "global", "clients")


def parse_manifest(data: Any) -> RoundManifest:
    """Validate a decoded manifest object and return it as a `RoundManifest`."""
    if not isinstance(data, Mapping):
        raise ManifestError(f"{MANIFEST_NAME} must hold a JSON object, got {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ManifestError(f"{MANIFEST_NAME} is missing required key {key!r}")
    if data["format"] != FORMAT:
        raise ManifestError(f"{MANIFEST_NAME}: 'format' must be exactly {FORMAT!r}, got {data['format']!r}")
    glob = _parse_entry(data["global"], "global", ("path", "sha256"))
    return RoundManifest(
        federation=_nonempty_str(data["federation"], "federation"),
        round=_int_at_least(data["round"], "round", 0),
        base_model=_nonempty_str(data["base_model"], "base_model"),
        kind=_kind(data["kind"]),
        aggregation=_nonempty_str(data["aggregation"], "aggregation"),
        global_path=glob["path"],
        global_sha256=glob["sha256"],
        clients=_parse_clients(data["clients"]),
        raw=dict(data),
    )


def load_manifest(round_dir: str | Path) -> RoundManifest:
    """Read `round_dir/manifest.json`, validate it, and check its folders stay inside `round_dir`."""
    root = Path(round_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise MissingFileError(f"{root}: no {MANIFEST_NAME} (is this a protoken-round/1 folder?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid UTF-8 JSON ({exc})") from None
    manifest = parse_manifest(data)
    resolve_inside(root, manifest.global_path, "global.path")
    for i, client in enumerate(manifest.clients):
        resolve_inside(root, client["path"], f"clients[{i}].path")
    return manifest


def check_relative_path(value: Any, key: str) -> str:
    """A manifest path must be a relative, forward-slash path without `..` components."""
    text = _nonempty_str(value, key)
    if "\\" in text:
        raise UnsafePathError(f"{MANIFEST_NAME}: {key} must use '/' separators, got {text!r}")
    pure = PurePosixPath(text)
    if pure.is_absolute() or re.match(r"[A-Za-z]:", text):
        raise UnsafePathError(f"{MANIFEST_NAME}: {key} must be relative to the manifest, got absolute {text!r}")
    if ".." in pure.parts:
        raise UnsafePathError(f"{MANIFEST_NAME}: {key} must not contain '..', got {text!r}")
    return text


def resolve_inside(root: str | Path, relative: str, key: str) -> Path:
    """Resolve `root/relative` following symlinks; refuse it if it lands outside `root`."""
    real_root = Path(root).resolve()
    try:
        target = (real_root / relative).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise UnsafePathError(f"{key} {relative!r} cannot be resolved ({exc})") from None
    if target != real_root and real_root not in target.parents:
        raise UnsafePathError(
            f"{key} {relative!r} resolves to {target}, outside the round folder {real_root} (symlink escape)"
        )
    return target


def is_valid_client_id(value: Any) -> bool:
    return isinstance(value, str) and CLIENT_ID_RE.fullmatch(value) is not None


def check_client_id(value: Any, key: str) -> str:
    if not is_valid_client_id(value):
        raise ManifestError(f"{key} must be 1-64 characters of [A-Za-z0-9._-], got {value!r}")
    return value


def check_num_examples(value: Any, key: str) -> int:
    return _int_at_least(value, key, 1)


def _parse_clients(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ManifestError(f"{MANIFEST_NAME}: 'clients' must be a non-empty list, got {value!r:.80}")
    clients, seen = [], set()
    for i, item in enumerate(value):
        entry = _parse_entry(item, f"clients[{i}]", ("id", "num_examples", "path", "sha256"))
        if entry["id"] in seen:
            raise ManifestError(f"{MANIFEST_NAME}: clients[{i}].id {entry['id']!r} is a duplicate; ids must be unique")
        seen.add(entry["id"])
        clients.append(entry)
    return clients


def _parse_entry(value: Any, where: str, keys: tuple[str, ...]) -> dict:
    """Validate the `global` block or one `clients[i]` entry; returns only the known keys."""
    if not isinstance(value, Mapping):
        raise ManifestError(f"{MANIFEST_NAME}: {where!r} must be an object, got {type(value).__name__}")
    for key in keys:
        if key not in value:
            raise ManifestError(f"{MANIFEST_NAME} is missing required key {where}.{key}")
    entry = {
        "path": check_relative_path(value["path"], f"{where}.path"),
        "sha256": _sha256(value["sha256"], f"{where}.sha256"),
    }
    if "id" in keys:
        entry["id"] = check_client_id(value["id"], f"{MANIFEST_NAME}: {where}.id")
        entry["num_examples"] = check_num_examples(value["num_examples"], f"{where}.num_examples")
    return entry


def _sha256(value: Any, key: str) -> str:
    if not isinstance(value, str) or SHA256_RE.fullmatch(value) is None:
        raise ManifestError(f"{MANIFEST_NAME}: {key} must be 64 hex characters (a sha256 digest), got {value!r}")
    return value.lower()


def _int_at_least(value: Any, key: str, low: int) -> int:
    # bool is an int subclass; `true` is never a valid round or example count.
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ManifestError(f"{MANIFEST_NAME}: {key} must be an integer >= {low}, got {value!r}")
    return value


def _nonempty_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{MANIFEST_NAME}: {key} must be a non-empty string, got {value!r}")
    return value


def _kind(value: Any) -> str:
    if value not in KINDS:
        raise ManifestError(f"{MANIFEST_NAME}: kind must be one of {', '.join(KINDS)}, got {value!r}")
    return value
