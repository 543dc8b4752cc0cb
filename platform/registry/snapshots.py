"""The bridge to the engine's round reader, with its errors turned into platform errors.

`attribution.read_round` is the single validator of `protoken-round/1`
folders (manifest keys, hashes, pickles, unsafe paths); the platform never
re-implements it. Its named exceptions become `InvalidInput` errors with a
stable code per kind of fault, keeping the engine's message, which names the
key, file or client at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InvalidInput

# Most specific first: the first matching class decides the code.
_ERROR_CODES = (
    ("HashMismatchError", "hash_mismatch"),
    ("PickleRefusedError", "pickle_refused"),
    ("UnsafePathError", "unsafe_path"),
    ("ManifestError", "invalid_manifest"),
    ("MissingFileError", "missing_file"),
    ("KindMismatchError", "kind_mismatch"),
    ("WeightsError", "invalid_weights"),
    ("AdapterError", "invalid_adapter"),
    ("BaseModelError", "invalid_base_model"),
    ("SnapshotError", "invalid_round"),
)


def error_code(exc: Exception) -> str:
    import attribution.errors as errors

    for class_name, code in _ERROR_CODES:
        if isinstance(exc, getattr(errors, class_name)):
            return code
    return "invalid_round"


def read_snapshot(folder: Path):
    """`attribution.read_round(folder)`, raising `InvalidInput` for every malformed round."""
    from attribution.errors import AttributionError
    from attribution.snapshot import read_round

    try:
        return read_round(folder)
    except AttributionError as exc:
        raise InvalidInput(error_code(exc), str(exc), field="archive") from None


def stored_manifest_overrides(folder: Path, snapshot) -> dict[str, bytes]:
    """Rewrite `base_model` to an absolute folder when it points outside the round.

    A relative base-model folder next to the round (``../base``) would no
    longer resolve once the round is copied into the artifact store.
    """
    base = snapshot.manifest.base_model
    candidate = (folder / base).resolve()
    if Path(base).is_absolute() or not candidate.is_dir() or candidate.is_relative_to(folder.resolve()):
        return {}
    raw = dict(snapshot.manifest.raw)
    raw["base_model"] = str(candidate)
    raw["base_model_as_written"] = base
    return {"manifest.json": json.dumps(raw, indent=2).encode()}
