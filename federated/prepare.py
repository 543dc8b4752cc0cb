"""Prepare a simulation's work folder: data, chat encoding, trunk cache, tail model.

The trunk runs once here over every training example and every evaluation
example; nothing downstream ever runs the frozen blocks again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from federated.chat import Encoded, encode, prompt_ids
from federated.data import Example
from federated.errors import SimulationConfigError
from federated.flower_app import WorkSpec, save_examples
from federated.protocols import ProtocolData
from federated.tail import build_tail, first_trained, trunk_states


@dataclass
class Prepared:
    work: Path
    base_dir: Path
    base_model: str  # as written into manifests
    n_layers: int
    first: int
    data: ProtocolData
    client_ids: list[str]
    malicious: list[str]
    case_prompt_ids: list[list[int]]
    eval_names: list[str]


def prepare_work(cfg, work: Path, *, progress: bool = True) -> Prepared:
    from attribution.shipped import load_model, load_tokenizer, resolve_base_model
    from federated.simulate import build_protocol

    base_dir = resolve_base_model(cfg.model, progress=progress)
    base, tok = load_model(base_dir), load_tokenizer(base_dir)
    first = first_trained(base, cfg.train_blocks)
    data = build_protocol(cfg)
    (work / "data").mkdir(parents=True, exist_ok=True)
    limits = {"max_prompt_tokens": cfg.max_prompt_tokens, "max_response_tokens": cfg.max_response_tokens}
    sets = _encoded_sets(cfg, data, tok, limits)
    _cache_sets(base, cfg.train_blocks, sets, work / "data", progress)
    tail = build_tail(base, cfg.train_blocks)
    tail.save_pretrained(work / "tail", safe_serialization=True)
    ids = [p.client_id for p in data.clients]
    WorkSpec(client_ids=ids, first=first, mode=cfg.mode, lora=cfg.lora, train=cfg.train, seed=cfg.seed,
             torch_threads=max(1, cfg.cpus // min(cfg.cpus, cfg.per_round))).save(work)
    case_ids = [prompt_ids(tok, c.prompt, max_tokens=cfg.max_prompt_tokens * 4) for c in data.cases]
    return Prepared(work, base_dir, str(cfg.model), int(base.config.num_hidden_layers), first, data, ids,
                    [p.client_id for p in data.clients if p.malicious], case_ids,
                    [n for n in sets if n.startswith("eval-")])


def _encoded_sets(cfg, data: ProtocolData, tok, limits: dict) -> dict[str, list[Encoded]]:
    sets: dict[str, list[Encoded]] = {}
    for plan in data.clients:
        sets[plan.client_id] = [e for e in (_try_encode(tok, x, limits) for x in plan.examples) if e]
        if not sets[plan.client_id]:
            raise SimulationConfigError(f"{plan.client_id} has no usable examples (all over "
                                        f"max_prompt_tokens={cfg.max_prompt_tokens})")
    refs = [Example(c.prompt, c.reference, c.domain, "case") for c in data.cases]
    sets["eval-cases"] = [encode(tok, x, **{**limits, "max_prompt_tokens": 10**6}) for x in refs]
    if cfg.protocol != "domains":  # would a clean prompt fire the backdoor?
        clean = [replace(x, response=cfg.sentinel) for x in data.clean]
    else:
        clean = data.clean
    sets["eval-clean"] = [e for e in (_try_encode(tok, x, limits) for x in clean) if e]
    return sets


def _try_encode(tok, example: Example, limits: dict) -> Encoded | None:
    from federated.errors import DatasetError

    try:
        return encode(tok, example, **limits)
    except DatasetError:
        return None


def _cache_sets(base: torch.nn.Module, k: int, sets: dict[str, list[Encoded]], folder: Path,
                progress: bool) -> None:
    total = sum(len(v) for v in sets.values())
    with tqdm(total=total, desc="trunk cache", unit="ex", disable=not progress) as bar:
        for name, encoded in sets.items():
            if encoded:
                save_examples(folder / f"{name}.safetensors", trunk_states(base, encoded, k), encoded)
            bar.update(len(encoded))
