"""Shared fixtures for the attribution tests.

- `tiny_model_dir(arch, tied=False)`: a random tiny HF model folder per architecture,
  built once per session (a few ms each).
- `smollm2_dir`: the shipped SmolLM2-135M-Instruct converted to a dense folder (slow
  the first time on a machine, then cached under $PROTOKEN_MODEL_CACHE).
- `make_round(out_dir, base_dir, kind=..., ...)`: writes a small valid round whose
  clients perturb the tracked modules of the base model; returns (path, clients).
- `load_base_tensors(model_dir)` and `make_peft_clients(base, layer, n, seed)`: the
  helpers `make_round` uses, as fixtures (test modules cannot import a conftest by name).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from attribution.snapshot import tracked_module_names, write_round
from attribution.snapshot_types import ClientUpdate, LoraFactors
from attribution.tiny import ARCHITECTURES, byte_tokenizer, save_tiny_model, tiny_config


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Callable[..., Path]:
    cache: dict[tuple[str, bool], Path] = {}

    def make(arch: str = "llama", *, tied: bool = False) -> Path:
        if (arch, tied) not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{arch}{'-tied' if tied else ''}")
            cache[(arch, tied)] = _save_tied(arch, out) if tied else save_tiny_model(arch, out, seed=0)
        return cache[(arch, tied)]

    return make


def _save_tied(arch: str, out: Path) -> Path:
    """Like save_tiny_model, but with tie_word_embeddings (the file then omits lm_head.weight)."""
    config = tiny_config(arch)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from attribution.shipped import resolve_base_model

    return resolve_base_model("smollm2-135m-instruct")


def base_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(model_dir / "model.safetensors", "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


def weights_clients(base: dict[str, torch.Tensor], modules: list[str], n: int, seed: int) -> list[ClientUpdate]:
    """Clients whose slices are the base's tracked tensors plus small seeded noise."""
    names = [k for k in base if any(k == m or k.startswith(m + ".") for m in modules)]
    clients = []
    for i in range(n):
        gen = torch.Generator().manual_seed(seed + i)
        tensors = {k: base[k] + 0.01 * torch.randn(base[k].shape, generator=gen) for k in names}
        clients.append(ClientUpdate(f"client-{i}", 10 * (i + 1), tensors=tensors))
    return clients


def peft_clients(base: dict[str, torch.Tensor], layer: int, n: int, seed: int) -> list[ClientUpdate]:
    """LoRA on o_proj (r=2), down_proj (r=4, other alpha); lm_head saved in full (modules_to_save)."""
    plan = {f"model.layers.{layer}.self_attn.o_proj": (2, 1.5), f"model.layers.{layer}.mlp.down_proj": (4, 0.25)}
    clients = []
    for i in range(n):
        gen = torch.Generator().manual_seed(seed + i)
        lora = {}
        for module, (rank, scaling) in plan.items():
            out_f, in_f = base[module + ".weight"].shape
            lora[module] = LoraFactors(torch.randn(rank, in_f, generator=gen), torch.randn(out_f, rank, generator=gen),
                                       scaling)
        head = base["lm_head.weight"] + 0.01 * torch.randn(base["lm_head.weight"].shape, generator=gen)
        clients.append(ClientUpdate(f"client-{i}", 5 + i, lora=lora, tensors={"lm_head.weight": head}))
    return clients


@pytest.fixture(scope="session")
def load_base_tensors() -> Callable[[Path], dict[str, torch.Tensor]]:
    return base_tensors


@pytest.fixture(scope="session")
def make_peft_clients() -> Callable[..., list[ClientUpdate]]:
    return peft_clients


@pytest.fixture
def make_round() -> Callable[..., tuple[Path, list[ClientUpdate]]]:
    def make(out_dir: Path, base_dir: Path, *, kind: str = "weights", n_clients: int = 3, seed: int = 0,
             base_model: str | None = None, **kwargs) -> tuple[Path, list[ClientUpdate]]:
        base = base_tensors(base_dir)
        if kind == "weights":
            clients = weights_clients(base, tracked_module_names(base_dir), n_clients + 1, seed)
        else:
            layer = len({k.split(".")[2] for k in base if k.startswith("model.layers.")}) - 1
            clients = peft_clients(base, layer, n_clients + 1, seed)
        glob, clients = clients[0], clients[1:]
        for j, client in enumerate(clients):
            client.client_id = f"client-{j}"
        path = write_round(out_dir, federation="test-fed", round=3, base_model=base_model or str(base_dir),
                           kind=kind, global_update=glob, clients=clients, **kwargs)
        return path, clients

    return make


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


# ---------------------------------------------------------------- engine fixtures (attribution engine tests)

ENGINE_KINDS = ("full", "slice", "peft")


def engine_clients(base: dict[str, torch.Tensor], kind: str, n: int, seed: int) -> list[ClientUpdate]:
    """Clients for engine tests, built to exercise every client-evaluation path.

    full: every parameter perturbed. slice: the last two blocks' o_proj and mlp,
    lm_head for every other client, and the last client holds only down_proj
    (its other parameters are the base's). peft: LoRA on the last two blocks'
    o_proj (r=2), gate_proj (r=3) and down_proj (r=4), a saved lm_head on every
    other client, and the last client without LoRA on gate_proj.
    """
    layers = sorted({int(k.split(".")[2]) for k in base if k.startswith("model.layers.")})[-2:]
    head = "lm_head.weight" if "lm_head.weight" in base else "model.embed_tokens.weight"
    clients = []
    for i in range(n):
        gen = torch.Generator().manual_seed(seed + i)

        def noisy(t: torch.Tensor, scale: float = 0.05, gen: torch.Generator = gen) -> torch.Tensor:
            return t + scale * t.std() * torch.randn(t.shape, generator=gen)

        if kind == "full":
            clients.append(ClientUpdate(f"c{i}", 3 + i, tensors={k: noisy(v) for k, v in base.items()}))
            continue
        tensors = {head: noisy(base[head])} if i % 2 == 0 else {}
        if kind == "slice":
            prefixes = [f"model.layers.{layer}.{m}." for layer in layers for m in ("self_attn.o_proj", "mlp")]
            if i == n - 1:
                prefixes = [f"model.layers.{layers[-1]}.mlp.down_proj."]
            tensors |= {k: noisy(v) for k, v in base.items() if any(k.startswith(p) for p in prefixes)}
            clients.append(ClientUpdate(f"c{i}", 3 + i, tensors=tensors))
            continue
        lora = {}
        for layer in layers:
            for module, rank in (("self_attn.o_proj", 2), ("mlp.gate_proj", 3), ("mlp.down_proj", 4)):
                if i == n - 1 and module == "mlp.gate_proj":
                    continue
                out_f, in_f = base[f"model.layers.{layer}.{module}.weight"].shape
                lora[f"model.layers.{layer}.{module}"] = LoraFactors(
                    0.3 * torch.randn(rank, in_f, generator=gen), 0.3 * torch.randn(out_f, rank, generator=gen),
                    0.5 + 0.25 * rank)
        clients.append(ClientUpdate(f"c{i}", 3 + i, tensors=tensors, lora=lora))
    return clients


def engine_global(base: dict[str, torch.Tensor], kind: str, clients: list[ClientUpdate]) -> ClientUpdate:
    """FedAvg of the clients for weights rounds; for peft, the first client's adapter serves as global."""
    if kind == "peft":
        return ClientUpdate("global", 1, tensors=dict(clients[0].tensors), lora=dict(clients[0].lora))
    total = sum(c.num_examples for c in clients)
    names = sorted({k for c in clients for k in c.tensors})
    return ClientUpdate("global", total, tensors={
        k: sum(c.tensors.get(k, base[k]) * c.num_examples for c in clients) / total for k in names})


@pytest.fixture(scope="session")
def engine_round_dir(tiny_model_dir, tmp_path_factory) -> Callable[..., Path]:
    """engine_round_dir(arch, kind, tied=False, n_clients=3) -> a written round folder (cached)."""
    cache: dict[tuple, Path] = {}

    def make(arch: str = "llama", kind: str = "slice", *, tied: bool = False, n_clients: int = 3,
             seed: int = 0) -> Path:
        key = (arch, kind, tied, n_clients, seed)
        if key not in cache:
            base_dir = tiny_model_dir(arch, tied=tied)
            base = base_tensors(base_dir)
            clients = engine_clients(base, kind, n_clients, seed)
            out = tmp_path_factory.mktemp(f"engine-{arch}-{kind}") / "round"
            cache[key] = write_round(out, federation="engine-test", round=1, base_model=str(base_dir),
                                     kind="peft" if kind == "peft" else "weights",
                                     global_update=engine_global(base, kind, clients), clients=clients)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def engine_round(engine_round_dir) -> Callable[..., object]:
    """engine_round(arch, kind, tied=False, n_clients=3) -> a LoadedRound (cached per session)."""
    from attribution.loaded import load_round

    cache: dict[tuple, object] = {}

    def make(arch: str = "llama", kind: str = "slice", *, tied: bool = False, n_clients: int = 3,
             seed: int = 0):
        key = (arch, kind, tied, n_clients, seed)
        if key not in cache:
            cache[key] = load_round(engine_round_dir(arch, kind, tied=tied, n_clients=n_clients, seed=seed))
        return cache[key]

    return make
