"""Named exceptions of the `attribution` package.

Every user-facing failure raises a subclass of `AttributionError` whose message
names what is at fault (the manifest key, file, client or parameter) and what
was expected, so the CLI and the platform API can show it as-is (exit code 2,
HTTP 4xx). Anything else that escapes is a bug, not bad input.

The snapshot errors also derive from `ValueError`, so callers that only know
"bad value" still catch them.

    AttributionError
    ├── SnapshotError (ValueError)      a round folder or its inputs are malformed
    │   ├── ManifestError               manifest.json: missing key, wrong type/format
    │   ├── UnsafePathError             absolute path, `..`, symlink escaping the round
    │   ├── MissingFileError            a folder or file the format requires is absent
    │   ├── HashMismatchError           sha256 of a weights file differs from the manifest
    │   ├── PickleRefusedError          a pickle file is present (never opened)
    │   ├── KindMismatchError           folder contents disagree with the manifest `kind`
    │   ├── WeightsError                NaN/inf, wrong shape, unknown parameter name
    │   └── AdapterError                malformed or unsupported PEFT adapter
    ├── BaseModelError (ValueError)     base model cannot be resolved, converted or loaded
    │   └── ModelPackageMissingError    the pip package that ships a model is not installed
    └── ModuleSelectionError (ValueError)  a tracked-module selection names no such modules
"""

from __future__ import annotations


class AttributionError(Exception):
    """Base class of every error the attribution package reports to a user."""


class SnapshotError(AttributionError, ValueError):
    """A `protoken-round/1` folder, or the inputs to write one, are malformed."""


class ManifestError(SnapshotError):
    """manifest.json is missing, not JSON, lacks a required key, or has a bad value."""


class UnsafePathError(SnapshotError):
    """A path in the round is absolute, contains `..`, or resolves outside the round folder."""


class MissingFileError(SnapshotError):
    """A folder or file that the round format requires does not exist."""


class HashMismatchError(SnapshotError):
    """The sha256 of a weights file differs from the one recorded in the manifest."""


class PickleRefusedError(SnapshotError):
    """A pickle file is present; it is refused without ever being opened."""


class KindMismatchError(SnapshotError):
    """A folder holds the other kind of weights than the manifest's `kind` says."""


class WeightsError(SnapshotError):
    """A tensor is non-finite, has the wrong shape or dtype, or names no base-model parameter."""


class AdapterError(SnapshotError):
    """A PEFT adapter is malformed or uses a feature the engine does not support."""


class BaseModelError(AttributionError, ValueError):
    """A base model cannot be resolved, converted or loaded."""


class ModelPackageMissingError(BaseModelError):
    """The pip package that ships a model is not installed; the message names the pip command."""


class ModuleSelectionError(AttributionError, ValueError):
    """A tracked-module selection is invalid for the model (bad block count, unknown module)."""


# Engine-side errors (configuration, generation, ...) are added below this line.


class ConfigError(AttributionError, ValueError):
    """An `AttributionConfig` field (or a CLI option that sets one) has an invalid value."""


class InputError(AttributionError, ValueError):
    """A prompt or response to attribute is empty, too long, or holds ids outside the vocabulary."""


class ModuleError(AttributionError, ValueError):
    """A tracked module is missing from the model or is of a type the engine cannot evaluate."""


class ResultError(AttributionError, ValueError):
    """A serialised attribution result (JSON) is malformed or of an unknown version."""
