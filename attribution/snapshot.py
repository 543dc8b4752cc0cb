"""Read, write and slice `protoken-round/1` round folders (see ROUND_FORMAT.md).

Reading (`read_round`) is a pipeline of checks that either returns a complete
`RoundSnapshot` or raises a named `SnapshotError`/`BaseModelError`; it has no
side effects besides a one-time conversion of a shipped base model:

1. refuse the round if any pickle file exists anywhere in it, judged by name
   only, so a malicious pickle is never opened;
2. parse manifest.json (`attribution.manifest`), refusing paths that leave the
   round folder after symlinks are resolved;
3. resolve the base model and read its parameter names and shapes from the
   safetensors header (no weights are loaded);
4. per folder (global, then clients): find the weights file the `kind` calls
   for, verify its sha256, load it with `safetensors.torch.load_file`, and
   validate every tensor (known name, base shape, floating point, finite).

`weights` folders hold tensors in the base model's own names; they are kept as
they are, plus one alias: under tied embeddings a folder that changes the input
embedding but omits ``lm_head.weight`` changes the output head too, so
``lm_head.weight`` is added as the same tensor. `peft` folders are PEFT LoRA
adapters; their keys (``base_model.model.<module>.lora_A.weight``) are mapped
to base module names with `LoraFactors(A, B, scaling)` computed as PEFT does
(``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA, per-module `rank_pattern`/
`alpha_pattern`). Adapter features that change the maths beyond
``W + scaling * B @ A`` (DoRA, biases, ...) are refused, not approximated.

Writing (`write_round`) validates everything the reader would, writes into a
temporary sibling folder, fsyncs it and renames it into place, so a crash
leaves either no round or a complete one. PEFT adapters are written in PEFT's
own key naming with an adapter_config.json that `peft.PeftModel.from_pretrained`
loads.

`tracked_module_names` and `slice_state_dict` define which modules the
attribution tracks (the paper's: last block's ``self_attn.o_proj`` and
``mlp``, plus ``lm_head``) and cut a client's state dict down to them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from attribution.errors import (
    AdapterError,
    HashMismatchError,
    KindMismatchError,
    ManifestError,
    MissingFileError,
    ModuleSelectionError,
    PickleRefusedError,
    SnapshotError,
    WeightsError,
)
from attribution.manifest import (
    MANIFEST_NAME,
    REQUIRED_KEYS,
    check_client_id,
    check_num_examples,
    load_manifest,
    parse_manifest,
    resolve_inside,
)
from attribution.shipped import BaseModelSpec, base_model_spec, resolve_base_model
from attribution.snapshot_types import FORMAT, KINDS, ClientUpdate, LoraFactors, RoundSnapshot

WEIGHTS_FILE = {"weights": "model.safetensors", "peft": "adapter_model.safetensors"}
ADAPTER_CONFIG = "adapter_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PEFT_PREFIX = "base_model.model."
GLOBAL_ID = "global"
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<which>[AB])\.weight")


def file_sha256(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so memory stays flat for multi-GB weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# ====================================================================== reading


def read_round(path: str | Path, *, verify: bool = True) -> RoundSnapshot:
    """Read and validate a round folder; `verify=False` skips only the sha256 checks."""
    root = _round_root(path)
    refuse_pickles(root)
    manifest = load_manifest(root)
    spec = base_model_spec(resolve_base_model(manifest.base_model, relative_to=root))
    total = sum(c["num_examples"] for c in manifest.clients)
    global_entry = {"id": GLOBAL_ID, "num_examples": total, "path": manifest.global_path,
                    "sha256": manifest.global_sha256, "is_global": True}
    global_update = _read_update(root, manifest.kind, spec, global_entry, verify=verify)
    clients = [_read_update(root, manifest.kind, spec, c, verify=verify) for c in manifest.clients]
    return RoundSnapshot(root=root, manifest=manifest, base_model_dir=spec.model_dir,
                         global_update=global_update, clients=clients)


def _round_root(path: str | Path) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise MissingFileError(f"a round folder must be given as a path, got {type(path).__name__}")
    root = Path(path)
    if not root.exists():
        raise MissingFileError(f"round folder {root} does not exist")
    if not root.is_dir():
        raise MissingFileError(f"round folder {root} is not a folder")
    return root.resolve()


def find_pickle_files(root: str | Path) -> list[Path]:
    """Every file under `root` whose name marks it as a pickle; nothing is opened."""
    def fail(exc: OSError) -> None:
        raise SnapshotError(f"cannot list {exc.filename}: {exc.strerror}")

    found = []
    for folder, _dirs, files in os.walk(root, onerror=fail):
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES]
    return sorted(found)


def refuse_pickles(root: str | Path) -> None:
    pickles = find_pickle_files(root)
    if pickles:
        names = ", ".join(str(p.relative_to(root)) for p in pickles[:5])
        raise PickleRefusedError(
            f"round {root} contains pickle files ({names}); only safetensors are read and pickles "
            "are refused unopened. Remove them or convert them to safetensors."
        )


def _where(entry: dict) -> str:
    # Not by id: a client may legitimately be called "global".
    if entry.get("is_global"):
        return f"global model ({entry['path']})"
    return f"client {entry['id']!r} ({entry['path']})"


def _read_update(root: Path, kind: str, spec: BaseModelSpec, entry: dict, *, verify: bool) -> ClientUpdate:
    """Load one manifest entry ({id, num_examples, path, sha256}) into a validated `ClientUpdate`."""
    where = _where(entry)
    folder = resolve_inside(root, entry["path"], f"{where}: path")
    if not folder.is_dir():
        raise MissingFileError(f"{where}: folder {folder} does not exist")
    weights = _weights_file(root, folder, kind, where)
    if verify:
        _verify_sha256(weights, entry["sha256"], where)
    raw = _load_safetensors(weights, where)
    update = ClientUpdate(entry["id"], entry["num_examples"], entry["sha256"], weights_file=weights)
    if kind == "weights":
        update.tensors = check_weight_tensors(raw, spec, where)
    else:
        settings = read_adapter_config(_inside_file(root, folder / ADAPTER_CONFIG, where), where)
        update.tensors, update.lora = peft_to_base(raw, settings, spec, where)
    return update


def _weights_file(root: Path, folder: Path, kind: str, where: str) -> Path:
    expected = folder / WEIGHTS_FILE[kind]
    if not expected.exists():
        other_kind = next(k for k in KINDS if k != kind)
        if (folder / WEIGHTS_FILE[other_kind]).exists():
            raise KindMismatchError(
                f"{where}: manifest kind is {kind!r} but the folder holds {WEIGHTS_FILE[other_kind]} "
                f"(kind {other_kind!r}); a {kind!r} folder must hold {WEIGHTS_FILE[kind]}"
            )
        raise MissingFileError(f"{where}: weights file {expected.name} is missing (kind {kind!r})")
    return _inside_file(root, expected, where)


def _inside_file(root: Path, path: Path, where: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"{where}: {path.name} is missing")
    return resolve_inside(root, str(path.relative_to(root)), f"{where}: file")


def _verify_sha256(path: Path, expected: str, where: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise HashMismatchError(
            f"{where}: sha256 of {path.name} is {actual}, but the manifest records {expected}; "
            "the file changed or the manifest is wrong"
        )


def _load_safetensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{where}: {path.name} is not a readable safetensors file ({exc})") from None


# ---------------------------------------------------------------- tensor checks


def check_weight_tensors(tensors: Mapping[str, torch.Tensor], spec: BaseModelSpec,
                         where: str) -> dict[str, torch.Tensor]:
    """Validate base-named tensors (name, shape, dtype, finite); add the tied `lm_head` alias."""
    out = {}
    for name, tensor in tensors.items():
        _check_tensor(name, tensor, spec, where)
        out[name] = tensor
    for alias, stored in spec.aliases.items():
        # Tied: a new input embedding is also the new output head.
        if stored in out and alias not in out:
            out[alias] = out[stored]
    return out


def _check_tensor(name: str, tensor: Any, spec: BaseModelSpec, where: str) -> None:
    if name not in spec.shapes:
        close = difflib.get_close_matches(name, list(spec.shapes), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise WeightsError(f"{where}: parameter {name!r} is not a parameter of the base model{hint}")
    expected = spec.shapes[name]
    _check_values(name, tensor, expected, where)


def _check_values(name: str, tensor: Any, expected: tuple[int, ...], where: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise WeightsError(f"{where}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(expected):
        raise WeightsError(f"{where}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
    if not tensor.is_floating_point():
        raise WeightsError(f"{where}: {name} has dtype {tensor.dtype}; weights must be floating point")
    if not bool(torch.isfinite(tensor).all()):
        raise WeightsError(f"{where}: {name} contains NaN or inf values")


def check_lora(module: str, factors: Any, spec: BaseModelSpec, where: str) -> None:
    """A LoRA target must be a linear layer of the base model; A is (r, in), B is (out, r)."""
    if not isinstance(factors, LoraFactors):
        raise WeightsError(f"{where}: LoRA entry {module!r} must be LoraFactors, got {type(factors).__name__}")
    weight = spec.shapes.get(f"{module}.weight")
    if weight is None or len(weight) != 2:
        raise WeightsError(f"{where}: LoRA target {module!r} is not a linear layer of the base model")
    rank = factors.A.shape[0] if isinstance(factors.A, torch.Tensor) and factors.A.dim() == 2 else 0
    if rank < 1:
        raise WeightsError(f"{where}: {module}.lora_A must be a 2-D tensor (r, {weight[1]})")
    _check_values(f"{module}.lora_A", factors.A, (rank, weight[1]), where)
    _check_values(f"{module}.lora_B", factors.B, (weight[0], rank), where)
    scaling = factors.scaling
    if isinstance(scaling, bool) or not isinstance(scaling, int | float) or not math.isfinite(scaling) or scaling <= 0:
        raise WeightsError(f"{where}: {module} LoRA scaling must be a finite number > 0, got {scaling!r}")


# ---------------------------------------------------------------- PEFT adapters

# Adapter options that change the maths beyond W + scaling * B @ A, with the values that mean "off".
_UNSUPPORTED_OPTIONS = {
    "use_dora": ((False, None), "DoRA (use_dora=true)"),
    "bias": (("none", None), "trained biases (bias != 'none')"),
    "lora_bias": ((False, None), "LoRA biases (lora_bias=true)"),
    "fan_in_fan_out": ((False, None), "fan_in_fan_out layers"),
    "layer_replication": ((None, []), "layer_replication"),
    "trainable_token_indices": ((None, [], {}), "trainable_token_indices"),
    "target_parameters": ((None, []), "target_parameters"),
    "alora_invocation_tokens": ((None, []), "aLoRA (alora_invocation_tokens)"),
    "use_qalora": ((False, None), "QALoRA (use_qalora=true)"),
}


@dataclass(frozen=True)
class AdapterSettings:
    """The parts of a PEFT LoRA adapter_config.json that determine each module's scaling."""

    r: int
    lora_alpha: float
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        _positive_number(self.r, "r", integer=True)
        _positive_number(self.lora_alpha, "lora_alpha")
        if not isinstance(self.use_rslora, bool):
            raise AdapterError(f"use_rslora must be true or false, got {self.use_rslora!r}")
        for key, value in self.rank_pattern.items():
            _positive_number(value, f"rank_pattern[{key!r}]", integer=True)
        for key, value in self.alpha_pattern.items():
            _positive_number(value, f"alpha_pattern[{key!r}]")
        patterns = [*self.rank_pattern, *self.alpha_pattern]
        if isinstance(self.target_modules, str):
            patterns.append(self.target_modules)
        for pattern in patterns:
            _check_regex(pattern)
        if self.target_modules is not None and not _is_str_or_str_list(self.target_modules):
            raise AdapterError(f"target_modules must be a string or a list of strings, got {self.target_modules!r}")
        if self.modules_to_save is not None and not _is_str_or_str_list(self.modules_to_save, list_only=True):
            raise AdapterError(f"modules_to_save must be a list of strings, got {self.modules_to_save!r}")

    def rank_for(self, module: str) -> int:
        key = _pattern_key(self.rank_pattern, module)
        return self.r if key is None else self.rank_pattern[key]

    def alpha_for(self, module: str) -> float:
        key = _pattern_key(self.alpha_pattern, module)
        return self.lora_alpha if key is None else self.alpha_pattern[key]

    def scaling_for(self, module: str) -> float:
        rank = self.rank_for(module)
        return self.alpha_for(module) / (math.sqrt(rank) if self.use_rslora else rank)

    def targets(self, module: str) -> bool:
        if self.target_modules is None:
            return True
        if isinstance(self.target_modules, str):
            if self.target_modules == "all-linear":
                return module != "lm_head"
            return re.fullmatch(self.target_modules, module) is not None
        return any(_suffix_match(module, t) for t in self.target_modules)

    def saves(self, module: str) -> bool:
        return any(_suffix_match(module, m) for m in self.modules_to_save or [])


def _suffix_match(module: str, name: str) -> bool:
    return module == name or module.endswith("." + name)


def _pattern_key(patterns: Mapping[str, Any], module: str) -> str | None:
    """PEFT's rule: the first pattern that matches the end of the module name at a dot boundary."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


def _check_regex(pattern: Any) -> None:
    try:
        re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise AdapterError(f"pattern {pattern!r} is not a valid regular expression ({exc})") from None


def _positive_number(value: Any, key: str, *, integer: bool = False) -> None:
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value <= 0:
        what = "an integer" if integer else "a number"
        raise AdapterError(f"{key} must be {what} > 0, got {value!r}")


def _is_str_or_str_list(value: Any, *, list_only: bool = False) -> bool:
    if isinstance(value, str):
        return not list_only
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def read_adapter_config(path: Path, where: str) -> AdapterSettings:
    """Parse adapter_config.json; refuse non-LoRA adapters and options that change the maths."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{where}: {ADAPTER_CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AdapterError(f"{where}: {ADAPTER_CONFIG} must hold a JSON object")
    return parse_adapter_config(data, where)


def parse_adapter_config(data: Mapping[str, Any], where: str = ADAPTER_CONFIG) -> AdapterSettings:
    for key in ("peft_type", "r", "lora_alpha"):
        if key not in data:
            raise AdapterError(f"{where}: {ADAPTER_CONFIG} is missing required key {key!r}")
    if data["peft_type"] != "LORA":
        raise AdapterError(f"{where}: peft_type {data['peft_type']!r} is not supported; only LORA adapters are")
    for key, (neutral, what) in _UNSUPPORTED_OPTIONS.items():
        if data.get(key) not in neutral:
            raise AdapterError(f"{where}: the adapter uses {what} ({key}={data[key]!r}), which is not supported")
    try:
        return AdapterSettings(
            r=data["r"], lora_alpha=data["lora_alpha"], use_rslora=data.get("use_rslora") or False,
            rank_pattern=dict(data.get("rank_pattern") or {}), alpha_pattern=dict(data.get("alpha_pattern") or {}),
            target_modules=data.get("target_modules"), modules_to_save=data.get("modules_to_save"),
        )
    except AdapterError as exc:
        raise AdapterError(f"{where}: {ADAPTER_CONFIG}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"{where}: {ADAPTER_CONFIG} has a malformed pattern ({exc})") from None


def peft_to_base(raw: Mapping[str, torch.Tensor], settings: AdapterSettings, spec: BaseModelSpec,
                 where: str) -> tuple[dict[str, torch.Tensor], dict[str, LoraFactors]]:
    """Map PEFT keys to base names: LoRA factors per module, plus full `modules_to_save` tensors."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    full: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        if not key.startswith(PEFT_PREFIX):
            raise AdapterError(f"{where}: adapter key {key!r} does not start with {PEFT_PREFIX!r}")
        rest = key[len(PEFT_PREFIX):]
        match = _LORA_KEY.fullmatch(rest)
        if match:
            halves.setdefault(match["module"], {})[match["which"]] = tensor
        elif "lora_" in rest:
            raise AdapterError(f"{where}: adapter key {key!r} is not a supported LoRA weight (lora_A/lora_B.weight)")
        else:
            full[rest] = tensor
    lora = {module: _lora_factors(module, pair, settings, spec, where) for module, pair in sorted(halves.items())}
    for name in full:
        if not settings.saves(name.rpartition(".")[0]):
            raise AdapterError(f"{where}: adapter key {PEFT_PREFIX + name!r} is neither LoRA nor in modules_to_save")
    return check_weight_tensors(full, spec, where), lora


def _lora_factors(module: str, pair: dict[str, torch.Tensor], settings: AdapterSettings,
                  spec: BaseModelSpec, where: str) -> LoraFactors:
    for which in "AB":
        if which not in pair:
            raise AdapterError(f"{where}: LoRA module {module!r} has no lora_{which}.weight")
    if not settings.targets(module):
        raise AdapterError(f"{where}: LoRA module {module!r} is not matched by target_modules {settings.target_modules!r}")
    factors = LoraFactors(A=pair["A"], B=pair["B"], scaling=settings.scaling_for(module))
    check_lora(module, factors, spec, where)
    rank = factors.A.shape[0]
    if rank != settings.rank_for(module):
        raise AdapterError(
            f"{where}: {module}.lora_A has rank {rank} but {ADAPTER_CONFIG} gives r={settings.rank_for(module)}"
        )
    return factors


# ====================================================================== writing


def write_round(out_dir: str | Path, *, federation: str, round: int,  # noqa: A002 (the manifest's key name)
                base_model: str | os.PathLike, kind: str,
                global_update: ClientUpdate | Mapping[str, torch.Tensor], clients: Sequence[ClientUpdate],
                aggregation: str = "fedavg", extra: Mapping[str, Any] | None = None) -> Path:
    """Write a complete `protoken-round/1` folder atomically and return its path.

    `global_update` is a `ClientUpdate` (its id is ignored) or, for `weights`, a
    plain state dict. Client sha256 fields are ignored: the writer computes them.
    A relative `base_model` is taken relative to `out_dir`, as the reader will.
    """
    out = Path(out_dir).absolute()
    header = _manifest_header(federation, round, base_model, kind, aggregation, extra)
    glob, updates = _coerce_updates(global_update, clients)
    spec = base_model_spec(resolve_base_model(header["base_model"], relative_to=out))
    _check_update(glob, kind, spec, "global model")
    for update in updates:
        _check_update(update, kind, spec, f"client {update.client_id!r}")
    return _write_atomically(out, lambda tmp: _write_contents(tmp, header, glob, updates))


def _manifest_header(federation: Any, round_index: Any, base_model: Any, kind: Any, aggregation: Any,
                     extra: Mapping[str, Any] | None) -> dict:
    base = os.fspath(base_model) if isinstance(base_model, os.PathLike) else base_model
    header = {"format": FORMAT, "federation": federation, "round": round_index, "base_model": base,
              "kind": kind, "aggregation": aggregation}
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(REQUIRED_KEYS))
    if clash:
        raise ManifestError(f"extra manifest keys {clash} would overwrite required keys")
    # Validate the scalar fields exactly as the reader will, via a throwaway manifest.
    parse_manifest({**header, "global": {"path": "global", "sha256": "0" * 64},
                    "clients": [{"id": "x", "num_examples": 1, "path": "clients/x", "sha256": "0" * 64}]})
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"extra manifest keys must be JSON-serialisable ({exc})") from None
    return {**header, "extra": extra}


def _coerce_updates(global_update: Any, clients: Any) -> tuple[ClientUpdate, list[ClientUpdate]]:
    if isinstance(global_update, Mapping):
        global_update = ClientUpdate(GLOBAL_ID, 1, tensors=dict(global_update))
    if not isinstance(global_update, ClientUpdate):
        raise SnapshotError(f"global_update must be a ClientUpdate or a state dict, got {type(global_update).__name__}")
    if isinstance(clients, str | bytes | Mapping) or not isinstance(clients, Iterable):
        raise SnapshotError(f"clients must be a list of ClientUpdate, got {type(clients).__name__}")
    clients = list(clients)
    if not clients:
        raise SnapshotError("a round needs at least one client")
    seen = set()
    for i, client in enumerate(clients):
        if not isinstance(client, ClientUpdate):
            raise SnapshotError(f"clients[{i}] must be a ClientUpdate, got {type(client).__name__}")
        _check_client_identity(client, i, seen)
    glob = ClientUpdate(GLOBAL_ID, sum(c.num_examples for c in clients),
                        tensors=global_update.tensors, lora=global_update.lora)
    return glob, clients


def _check_client_identity(client: ClientUpdate, i: int, seen: set[str]) -> None:
    check_client_id(client.client_id, f"clients[{i}].id")
    if client.client_id in (".", ".."):
        raise ManifestError(f"clients[{i}].id {client.client_id!r} cannot name a folder; choose another id")
    if client.client_id in seen:
        raise ManifestError(f"clients[{i}].id {client.client_id!r} is a duplicate; ids must be unique")
    seen.add(client.client_id)
    check_num_examples(client.num_examples, f"clients[{i}].num_examples")


def _check_update(update: ClientUpdate, kind: str, spec: BaseModelSpec, where: str) -> None:
    if not isinstance(update.tensors, Mapping) or not isinstance(update.lora, Mapping):
        raise SnapshotError(f"{where}: tensors and lora must be dicts")
    for name, tensor in update.tensors.items():
        _check_tensor(name, tensor, spec, where)
    if kind == "weights" and update.lora:
        raise KindMismatchError(f"{where}: has LoRA factors but the round kind is 'weights'; use kind='peft'")
    if kind == "peft":
        if not update.lora:
            raise KindMismatchError(f"{where}: a 'peft' update needs at least one LoRA module")
        for module, factors in update.lora.items():
            check_lora(module, factors, spec, where)
        both = sorted({name.rpartition(".")[0] for name in update.tensors} & set(update.lora))
        if both:
            raise SnapshotError(f"{where}: modules {both} have LoRA factors and full tensors; PEFT allows one")


def _write_atomically(out: Path, fill: Callable[[Path], None]) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SnapshotError(f"{out} already exists and is not empty; refusing to overwrite a round")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        _fsync_tree(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a round is meant to be shared
        os.rename(tmp, out)  # atomic; also replaces an empty `out`
    except OSError as exc:
        raise SnapshotError(f"cannot write round {out}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return out


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder so the rename never publishes data still in the page cache."""
    for folder, _dirs, files in os.walk(root):
        for name in [*files, "."]:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_contents(tmp: Path, header: dict, glob: ClientUpdate, clients: list[ClientUpdate]) -> None:
    kind = header["kind"]
    manifest = {k: v for k, v in header.items() if k != "extra"}
    manifest["global"] = {"path": "global", "sha256": _write_update(tmp / "global", glob, kind)}
    manifest["clients"] = [
        {"id": c.client_id, "num_examples": c.num_examples, "path": f"clients/{c.client_id}",
         "sha256": _write_update(tmp / "clients" / c.client_id, c, kind)}
        for c in clients
    ]
    manifest.update(header["extra"])
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _write_update(folder: Path, update: ClientUpdate, kind: str) -> str:
    folder.mkdir(parents=True)
    path = folder / WEIGHTS_FILE[kind]
    if kind == "weights":
        tensors = dict(update.tensors)
    else:
        tensors = peft_state_dict(update)
        adapter_config(update).save_pretrained(str(folder))
    save_file(_storable(tensors), str(path), metadata={"format": "pt"})
    return file_sha256(path)


def _storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses shared tensors)."""
    out, seen = {}, set()
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def peft_state_dict(update: ClientUpdate) -> dict[str, torch.Tensor]:
    """An update's LoRA factors and saved modules under PEFT's own key names."""
    out = {}
    for module, factors in update.lora.items():
        out[f"{PEFT_PREFIX}{module}.lora_A.weight"] = factors.A
        out[f"{PEFT_PREFIX}{module}.lora_B.weight"] = factors.B
    for name, tensor in update.tensors.items():
        out[PEFT_PREFIX + name] = tensor
    return out


def adapter_config(update: ClientUpdate):
    """A `peft.LoraConfig` whose r/alpha (and per-module patterns) reproduce each factor's scaling."""
    from peft import LoraConfig

    ranks = {m: int(f.A.shape[0]) for m, f in update.lora.items()}
    alphas = {m: float(f.scaling) * ranks[m] for m, f in update.lora.items()}
    r0 = Counter(ranks.values()).most_common(1)[0][0]
    alpha0 = Counter(alphas.values()).most_common(1)[0][0]
    saved = sorted({name.rpartition(".")[0] for name in update.tensors})
    return LoraConfig(
        r=r0, lora_alpha=alpha0, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=sorted(update.lora),
        rank_pattern={re.escape(m): r for m, r in ranks.items() if r != r0},
        alpha_pattern={re.escape(m): a for m, a in alphas.items() if a != alpha0},
        modules_to_save=saved or None,
    )


# ====================================================================== slices


def tracked_module_names(config_or_model: Any, last_n_blocks: int = 1, include_lm_head: bool = True) -> list[str]:
    """The modules ProToken tracks: each of the last N blocks' `self_attn.o_proj` and `mlp`, then `lm_head`.

    Accepts a model (`nn.Module`), a transformers config, a config dict, or a model folder.
    """
    prefix, n_layers, head = _layer_layout(config_or_model)
    if isinstance(last_n_blocks, bool) or not isinstance(last_n_blocks, int) or not 1 <= last_n_blocks <= n_layers:
        raise ModuleSelectionError(f"last_n_blocks must be an integer in 1..{n_layers}, got {last_n_blocks!r}")
    names = []
    for layer in range(n_layers - last_n_blocks, n_layers):
        names += [f"{prefix}.{layer}.self_attn.o_proj", f"{prefix}.{layer}.mlp"]
    return names + [head] if include_lm_head else names


def _layer_layout(obj: Any) -> tuple[str, int, str]:
    """(decoder-layer prefix, number of layers, output-head name) of a model or config."""
    if isinstance(obj, torch.nn.Module):
        return _module_layout(obj)
    if isinstance(obj, str | os.PathLike):
        path = Path(obj)
        config_file = path / "config.json" if path.is_dir() else path
        try:
            obj = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModuleSelectionError(f"cannot read a model config from {path}: {exc}") from None
    config = obj.to_dict() if hasattr(obj, "to_dict") else obj
    if not isinstance(config, Mapping):
        raise ModuleSelectionError(f"expected a model, a config or a model folder, got {type(obj).__name__}")
    text = config.get("text_config") or {}
    n_layers = config.get("num_hidden_layers", text.get("num_hidden_layers"))
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ModuleSelectionError(f"model config has no valid num_hidden_layers (got {n_layers!r})")
    # Gemma3's multimodal wrapper nests the text decoder; the text-only models do not.
    prefix = "model.language_model.layers" if config.get("model_type") == "gemma3" else "model.layers"
    return prefix, n_layers, "lm_head"


def _module_layout(model: torch.nn.Module) -> tuple[str, int, str]:
    for name, module in model.named_modules():
        if name.split(".")[-1] == "layers" and isinstance(module, torch.nn.ModuleList) and len(module):
            block = module[len(module) - 1]
            if hasattr(block, "mlp") and hasattr(getattr(block, "self_attn", None), "o_proj"):
                return name, len(module), _head_name(model)
    raise ModuleSelectionError(
        f"{type(model).__name__} has no decoder `layers` list with self_attn.o_proj and mlp"
    )


def _head_name(model: torch.nn.Module) -> str:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if head is not None and module is head:
            return name
    return "lm_head"


def _in_module(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def slice_state_dict(state_dict: Mapping[str, torch.Tensor], module_names: Iterable[str], *,
                     strict: bool = True) -> dict[str, torch.Tensor]:
    """Keep only the parameters inside the given modules (matching whole dotted components).

    With `strict`, a module that matches no parameter is an error: it almost
    always means a naming mismatch, and a silent empty slice would attribute nothing.
    """
    if isinstance(module_names, str):
        raise ModuleSelectionError("module_names must be a list of module names, not one string")
    modules = list(module_names)
    kept = {k: v for k, v in state_dict.items() if any(_in_module(k, m) for m in modules)}
    if strict:
        missing = [m for m in modules if not any(_in_module(k, m) for k in state_dict)]
        if missing:
            raise ModuleSelectionError(f"modules {missing} match no parameter of the state dict")
    return kept


def changed_tracked_modules(snapshot: RoundSnapshot, update: ClientUpdate, module_names: Iterable[str], *,
                            spec: BaseModelSpec | None = None) -> list[str]:
    """Which of `module_names` the update changes relative to the base model.

    `weights`: a module is changed when one of its tensors differs from the base
    value. `peft`: when it holds a LoRA module with non-zero A and B, or a saved
    tensor that differs from the base value.
    """
    spec = spec or base_model_spec(snapshot.base_model_dir)
    changed = []
    for module in module_names:
        tensors = [(n, t) for n, t in update.tensors.items() if _in_module(n, module)]
        differs = any(not torch.equal(t, spec.load_tensor(n).to(t.dtype)) for n, t in tensors)
        lora = any(bool(f.A.any()) and bool(f.B.any()) for m, f in update.lora.items() if _in_module(m, module))
        if differs or lora:
            changed.append(module)
    return changed
