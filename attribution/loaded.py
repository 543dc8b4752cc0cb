"""A round made ready to attribute: the global model plus a source of client parameters.

`load_round` builds the global model as base + global update (weights: the
update's tensors replace the base ones; peft: ``W += scaling * B @ A`` and any
saved full tensors), in eval mode with every parameter frozen, and wraps the
clients in a *client source*: per client and Linear layer, the client's own
weight/bias (None = the base model's value) or its LoRA factors.

Two sources:

- `MemorySource` keeps every client update in memory (a `RoundSnapshot`
  passed in, a `peft` round, or a `weights` round whose client files together
  fit in `max_resident_bytes`);
- `FileSource` keeps only file paths and reads a client's tracked tensors
  from its safetensors file when its chunk is scored (``safe_open``, only the
  tensors asked for, ``lm_head`` only at the rows needed), then drops them.
  Peak memory is one chunk of clients, whatever K is. The reader's checks are
  split accordingly: sha256, names, shapes and dtypes at load time, finite
  values when a tensor is read.

The base model's values of tracked layers are needed as the value of every
client that does not hold its own. Where the global update leaves a parameter
alone, the global model's tensor *is* the base value and is shared; only
parameters the update changes are read again from the base model's file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .capture import TrackedModule, resolve_tracked
from .clients import ClientLinear
from .config import AttributionConfig
from .errors import ConfigError, MissingFileError, WeightsError
from .snapshot_types import ClientUpdate, RoundSnapshot

DEFAULT_MAX_RESIDENT_BYTES = 512 * 2**20
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class RoundInfo:
    """Provenance of a loaded round (what every result names)."""

    root: str | None
    federation: str
    round: int
    base_model: str
    base_model_dir: str
    kind: str
    aggregation: str
    global_sha256: str
    client_ids: tuple[str, ...]
    client_sha256: tuple[str, ...]
    num_examples: tuple[int, ...]


class ClientSource:
    """Per-client values of Linear layers, by client index."""

    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases  # tied parameter -> the stored parameter it shares

    def params(self, index: int, parts: list[str], rows: dict) -> dict[str, ClientLinear]:
        raise NotImplementedError

    def client_nbytes(self, parts: list[str], rows: dict) -> int:
        """The most bytes one client's values of `parts` occupy once read."""
        raise NotImplementedError

    @property
    def resident_nbytes(self) -> int:
        return 0


class MemorySource(ClientSource):
    def __init__(self, updates: list[ClientUpdate], aliases: dict[str, str]):
        super().__init__(aliases)
        self.updates = updates

    def _tensor(self, update: ClientUpdate, name: str) -> torch.Tensor | None:
        tensor = update.tensors.get(name)
        if tensor is None and name in self.aliases:
            tensor = update.tensors.get(self.aliases[name])
        return tensor

    def params(self, index: int, parts: list[str], rows: dict) -> dict[str, ClientLinear]:
        update = self.updates[index]
        out = {}
        for part in parts:
            keep = rows.get(part)
            weight, bias = self._tensor(update, f"{part}.weight"), self._tensor(update, f"{part}.bias")
            entry = ClientLinear(_rows(weight, keep), _rows(bias, keep))
            lora = update.lora.get(part)
            if lora is not None:
                entry.lora_a, entry.lora_b = lora.A, _rows(lora.B, keep) * lora.scaling
            out[part] = entry
        return out

    def client_nbytes(self, parts: list[str], rows: dict) -> int:
        return max((sum(v.nbytes for v in self.params(i, parts, rows).values())
                    for i in range(len(self.updates))), default=0)

    @property
    def resident_nbytes(self) -> int:
        tensors = [t for u in self.updates for t in u.tensors.values()]
        tensors += [t for u in self.updates for f in u.lora.values() for t in (f.A, f.B)]
        seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(seen.values())


class FileSource(ClientSource):
    """Reads each client's tracked tensors from its `model.safetensors` on demand."""

    def __init__(self, files: list[Path], client_ids: list[str], aliases: dict[str, str],
                 shapes: list[dict[str, tuple[int, ...]]], itemsize: list[dict[str, int]]):
        super().__init__(aliases)
        self.files, self.client_ids = files, client_ids
        self.shapes, self.itemsize = shapes, itemsize

    def _stored(self, index: int, name: str) -> str | None:
        if name in self.shapes[index]:
            return name
        alias = self.aliases.get(name)
        return alias if alias in self.shapes[index] else None

    def params(self, index: int, parts: list[str], rows: dict) -> dict[str, ClientLinear]:
        with safe_open(self.files[index], "pt", device="cpu") as handle:
            return {part: ClientLinear(self._read(handle, index, f"{part}.weight", rows.get(part)),
                                       self._read(handle, index, f"{part}.bias", rows.get(part)))
                    for part in parts}

    def _read(self, handle, index: int, name: str, keep: torch.Tensor | None) -> torch.Tensor | None:
        stored = self._stored(index, name)
        if stored is None:
            return None
        if keep is None:
            tensor = handle.get_tensor(stored)
        else:
            view = handle.get_slice(stored)
            tensor = torch.cat([view[r:r + 1] for r in keep.tolist()]) if len(keep) else None
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"client {self.client_ids[index]!r} ({self.files[index]}): {stored} "
                               "contains NaN or inf values")
        return tensor

    def client_nbytes(self, parts: list[str], rows: dict) -> int:
        def size(index: int, part: str, name: str) -> int:
            stored = self._stored(index, name)
            if stored is None:
                return 0
            shape, keep = self.shapes[index][stored], rows.get(part)
            count = (len(keep) if keep is not None else shape[0]) * int(torch.tensor(shape[1:]).prod())
            return count * self.itemsize[index][stored]

        return max((sum(size(i, p, f"{p}.{w}") for p in parts for w in ("weight", "bias"))
                    for i in range(len(self.files))), default=0)


def _rows(tensor: torch.Tensor | None, keep: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None or keep is None:
        return tensor
    return tensor[keep.to(tensor.device)]


@dataclass
class LoadedRound:
    """The global model, its tokenizer and the clients of one round, ready to attribute."""

    model: torch.nn.Module
    tokenizer: object
    info: RoundInfo
    source: ClientSource
    spec: object  # attribution.shipped.BaseModelSpec of the base model
    changed: frozenset[str]  # parameter names the global update changed
    config: AttributionConfig
    device: torch.device
    dtype: torch.dtype
    _base_cache: dict = field(default_factory=dict, repr=False)
    _tracked_cache: dict = field(default_factory=dict, repr=False)

    @property
    def client_ids(self) -> list[str]:
        return list(self.info.client_ids)

    @property
    def num_clients(self) -> int:
        return len(self.info.client_ids)

    def tracked(self, config: AttributionConfig | None = None) -> list[TrackedModule]:
        config = config or self.config
        key = (config.modules, config.last_n_blocks, config.include_lm_head)
        if key not in self._tracked_cache:
            self._tracked_cache[key] = resolve_tracked(self.model, config)
        return self._tracked_cache[key]

    def base_param(self, name: str) -> torch.Tensor | None:
        """The base model's value of a parameter (None if the layer has no such parameter)."""
        try:
            current = self.model.get_parameter(name)
        except AttributeError:
            return None
        if name not in self.changed:
            return current.detach()
        if name not in self._base_cache:
            self._base_cache[name] = self.spec.load_tensor(name).to(self.device, self.dtype)
        return self._base_cache[name]

    def base_linear(self, part: str, rows: torch.Tensor | None):
        weight, bias = self.base_param(f"{part}.weight"), self.base_param(f"{part}.bias")
        if rows is not None:
            keep = rows.to(weight.device)
            weight, bias = weight[keep], (bias[keep] if bias is not None else None)
        return weight, bias

    @property
    def nbytes(self) -> int:
        """Estimated memory held: model parameters, base copies and resident client tensors."""
        model = sum(p.numel() * p.element_size() for p in self.model.parameters())
        base = sum(t.numel() * t.element_size() for t in self._base_cache.values())
        return model + base + self.source.resident_nbytes


def load_round(path_or_snapshot, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               config: AttributionConfig | None = None, verify: bool = True,
               max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES) -> LoadedRound:
    """Load a round folder (or an already-read `RoundSnapshot`) for attribution."""
    config = _check_config(config)
    snapshot, source_files = _open(path_or_snapshot, verify, max_resident_bytes)
    from .shipped import base_model_spec, load_model, load_tokenizer

    spec = base_model_spec(snapshot.base_model_dir)
    model = load_model(snapshot.base_model_dir, dtype=dtype, device=device)
    model.requires_grad_(False)
    changed = apply_update(model, snapshot.global_update, spec.aliases)
    source = source_files if source_files is not None else MemorySource(snapshot.clients, spec.aliases)
    loaded = LoadedRound(model, load_tokenizer(snapshot.base_model_dir), _info(snapshot), source, spec,
                         changed, config, torch.device(device), dtype)
    loaded.tracked(config)  # fail now, not mid-attribution, on a bad module selection
    return loaded


def _check_config(config) -> AttributionConfig:
    if config is None:
        return AttributionConfig()
    if not isinstance(config, AttributionConfig):
        raise ConfigError(f"config must be an AttributionConfig, got {type(config).__name__}")
    return config


def _open(path_or_snapshot, verify: bool, max_resident_bytes: int):
    if isinstance(path_or_snapshot, RoundSnapshot):
        return path_or_snapshot, None
    if not isinstance(path_or_snapshot, str | os.PathLike):
        raise MissingFileError(f"expected a round folder path or a RoundSnapshot, got {type(path_or_snapshot).__name__}")
    from .snapshot import read_round

    if _client_files_nbytes(Path(path_or_snapshot)) <= max_resident_bytes:
        return read_round(path_or_snapshot, verify=verify), None
    return _read_round_lazily(Path(path_or_snapshot), verify)


def _info(snapshot: RoundSnapshot) -> RoundInfo:
    m = snapshot.manifest
    return RoundInfo(
        root=str(snapshot.root) if snapshot.root else None, federation=m.federation, round=m.round,
        base_model=m.base_model, base_model_dir=str(snapshot.base_model_dir), kind=m.kind,
        aggregation=m.aggregation, global_sha256=m.global_sha256,
        client_ids=tuple(c.client_id for c in snapshot.clients),
        client_sha256=tuple(c.sha256 for c in snapshot.clients),
        num_examples=tuple(c.num_examples for c in snapshot.clients),
    )


@torch.no_grad()
def apply_update(model: torch.nn.Module, update: ClientUpdate, aliases: dict[str, str]) -> frozenset[str]:
    """Turn the base model into the global one in place; return the parameter names changed."""
    changed = set()
    for name, tensor in update.tensors.items():
        _param(model, name).copy_(tensor)
        changed.add(name)
    for module, factors in update.lora.items():
        weight = _param(model, f"{module}.weight")
        weight += factors.scaling * (factors.B.to(weight) @ factors.A.to(weight))
        changed.add(f"{module}.weight")
    for alias, stored in aliases.items():  # tied: changing one changes both
        if alias in changed or stored in changed:
            changed |= {alias, stored}
    return frozenset(changed)


def _param(model: torch.nn.Module, name: str) -> torch.Tensor:
    try:
        return model.get_parameter(name)
    except AttributeError:
        raise WeightsError(f"the global update names {name!r}, which is not a parameter of the model") from None


# ---------------------------------------------------------------- lazy reading of large weights rounds

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def _client_files_nbytes(root: Path) -> int:
    """Total size of the client weight files of a `weights` round (0 for anything else).

    Anything odd (no manifest, a `peft` round, missing files) returns 0 so that
    the eager reader runs and reports it with its own specific error.
    """
    from .manifest import load_manifest, resolve_inside
    from .snapshot import refuse_pickles

    if not root.is_dir():
        return 0
    refuse_pickles(root)
    manifest = load_manifest(root)
    if manifest.kind != "weights":
        return 0
    files = [resolve_inside(root, c["path"], f"path of client {c['id']!r}") / WEIGHTS_FILE for c in manifest.clients]
    return sum(f.stat().st_size for f in files if f.is_file())


def _read_round_lazily(path: Path, verify: bool) -> tuple[RoundSnapshot, FileSource]:
    """A `weights` round whose clients stay on disk: checked, hashed, headers validated, not loaded."""
    from .manifest import load_manifest
    from .shipped import base_model_spec, resolve_base_model
    from .snapshot import check_weight_tensors, refuse_pickles

    root = path.resolve()
    refuse_pickles(root)
    manifest = load_manifest(root)
    spec = base_model_spec(resolve_base_model(manifest.base_model, relative_to=root))
    glob_file = _weights_path(root, manifest.global_path, "global.path", manifest.global_sha256, verify)
    tensors = check_weight_tensors(_load(glob_file, "global model"), spec, "global model")
    glob = ClientUpdate("global", sum(c["num_examples"] for c in manifest.clients), manifest.global_sha256,
                        tensors=tensors, weights_file=glob_file)
    clients, files, shapes, sizes = [], [], [], []
    for c in manifest.clients:
        file = _weights_path(root, c["path"], f"path of client {c['id']!r}", c["sha256"], verify)
        shape, size = _check_header(file, spec, f"client {c['id']!r} ({c['path']})")
        clients.append(ClientUpdate(c["id"], c["num_examples"], c["sha256"], weights_file=file))
        files.append(file), shapes.append(shape), sizes.append(size)
    snapshot = RoundSnapshot(root, manifest, spec.model_dir, glob, clients)
    return snapshot, FileSource(files, [c["id"] for c in manifest.clients], spec.aliases, shapes, sizes)


def _weights_path(root: Path, rel: str, key: str, sha256: str, verify: bool) -> Path:
    from .errors import HashMismatchError
    from .manifest import resolve_inside
    from .snapshot import file_sha256

    file = resolve_inside(root, rel, key) / WEIGHTS_FILE
    if not file.is_file():
        raise MissingFileError(f"{key} {rel!r}: weights file {WEIGHTS_FILE} is missing (kind 'weights')")
    if verify and file_sha256(file) != sha256:
        raise HashMismatchError(f"{key} {rel!r}: sha256 of {WEIGHTS_FILE} differs from the manifest's {sha256}")
    return file


def _load(file: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{where}: {file.name} is not a readable safetensors file ({exc})") from None


def _check_header(file: Path, spec, where: str) -> tuple[dict, dict]:
    """Names, shapes and dtypes of a client file, checked against the base model without reading data."""
    shapes, sizes = {}, {}
    try:
        with safe_open(file, "pt", device="cpu") as handle:
            for key in handle.keys():
                view = handle.get_slice(key)
                shapes[key], dtype = tuple(view.get_shape()), view.get_dtype()
                sizes[key] = _ITEMSIZE.get(dtype, 0)
                _check_entry(key, shapes[key], dtype, spec, where)
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{where}: {file.name} is not a readable safetensors file ({exc})") from None
    return shapes, sizes


def _check_entry(key: str, shape: tuple, dtype: str, spec, where: str) -> None:
    if key not in spec.shapes:
        raise WeightsError(f"{where}: parameter {key!r} is not a parameter of the base model")
    if shape != tuple(spec.shapes[key]):
        raise WeightsError(f"{where}: {key} has shape {shape}, expected {tuple(spec.shapes[key])}")
    if dtype not in _ITEMSIZE:
        raise WeightsError(f"{where}: {key} has dtype {dtype}; weights must be floating point")
