"""`python -m attribution attribute ROUND_DIR --prompt TEXT [...]`: attribute one response.

Loads the round (progress on stderr), applies the tokenizer's chat template to
the prompt unless `--raw` (or the tokenizer has none), then generates greedily
and attributes, or teacher-forces `--response`. Prints the per-token table
(position, token, top client, its share, then the sequence shares), or the
result's JSON with `--json`.

`python -m attribution lineage ROUND_DIR... --prompt TEXT` takes a federation's
rounds, oldest first, and scores each token of the last round's response at
the round that made it (`attribution.lineage`); its table adds that round.

Bad input raises an `AttributionError`, which `attribution.cli.main` turns
into exit code 2 and a one-line ``error: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm import tqdm

from .config import AGGREGATIONS, DTYPES, TARGETS, AttributionConfig
from .errors import ConfigError, InputError
from .lineage import CREDITS, DEFAULT_CREDIT
from .loaded import load_round


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `attribute` and `lineage` subparsers; each `func` runs its command."""
    parser = subparsers.add_parser("attribute", help="attribute a response to the clients of a round",
                                   description="Generate (or teacher-force) a response with the round's global "
                                   "model and attribute every token to the clients.")
    parser.add_argument("round_dir", help="a protoken-round/1 folder")
    _add_item_args(parser)
    parser.set_defaults(func=run)
    lineage = subparsers.add_parser(
        "lineage", help="attribute each token with the clients of the round that made it",
        description="Attribute a response on the last of ROUND_DIRS (oldest first, from the federation's first "
        "round), scoring each token at the round whose global model first picked it and kept picking it "
        "(see attribution.lineage).")
    lineage.add_argument("round_dirs", nargs="+", metavar="ROUND_DIR", help="protoken-round/1 folders, oldest first")
    _add_item_args(lineage)
    lineage.add_argument("--credit", choices=CREDITS, default=DEFAULT_CREDIT,
                         help="a made token votes with its making round's shares (making), or with their mean "
                         "over every round up to it (cumulative); default: %(default)s")
    lineage.set_defaults(func=run_lineage)


def _add_item_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--response", help="teacher-force this response instead of generating one")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="when generating (default 32)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--raw", action="store_true", help="do not apply the tokenizer's chat template")
    parser.add_argument("--last-n-blocks", type=int, default=1, metavar="N",
                        help="track o_proj and mlp of the last N blocks, plus lm_head (default 1)")
    parser.add_argument("--target", choices=TARGETS, default="logit", help="gradient target (default logit)")
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="sum",
                        help="token scores -> sequence scores (default sum, as published)")
    parser.add_argument("--no-gradient-weighting", action="store_true", help="the paper's ablation: g = ones")
    parser.add_argument("--fedavg-weights", action="store_true", help="multiply client scores by n_i / sum n")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="model dtype (default float32)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 checks of the round")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def config_from_args(args: argparse.Namespace) -> AttributionConfig:
    return AttributionConfig(
        last_n_blocks=args.last_n_blocks, target=args.target, aggregation=args.aggregation,
        gradient_weighting=not args.no_gradient_weighting, apply_fedavg_weights=args.fedavg_weights,
        device=args.device, dtype=args.dtype,
    )


def _start(args: argparse.Namespace) -> AttributionConfig:
    """The run's config, after the cheap checks that should fail before any model load."""
    config = config_from_args(args)
    _check_device(config.device)
    _check_texts(args)
    _quiet_transformers()
    return config


def _load(args: argparse.Namespace, round_dir: str, config: AttributionConfig):
    return load_round(round_dir, device=config.device, dtype=config.torch_dtype, config=config,
                      verify=not args.no_verify)


def run(args: argparse.Namespace) -> int:
    from . import attribute

    config = _start(args)
    with Progress(enabled=not args.no_progress) as progress:
        progress.stage("loading round")
        loaded = _load(args, args.round_dir, config)
        progress.stage("attributing")
        result = attribute(loaded, prompt=args.prompt, response=args.response, max_new_tokens=args.max_new_tokens,
                           chat_template=not args.raw, config=config, progress=progress)
    print(result.to_json(indent=2) if args.json else result.table())
    return 0


def run_lineage(args: argparse.Namespace) -> int:
    from .lineage import attribute_lineage

    config = _start(args)
    with Progress(enabled=not args.no_progress) as progress:
        progress.stage(f"loading {args.round_dirs[-1]}")
        loaded = _load(args, args.round_dirs[-1], config)
        item = {"prompt": args.prompt, "response": args.response, "max_new_tokens": args.max_new_tokens,
                "chat_template": not args.raw}
        progress.stage(f"walking back through {len(args.round_dirs)} rounds")
        result, = attribute_lineage([*args.round_dirs[:-1], loaded], [item], config, device=config.device,
                                    dtype=config.torch_dtype, verify=not args.no_verify, progress=progress,
                                    credit=args.credit)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0


def _check_device(device: str) -> None:
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available on this machine")


def _check_texts(args: argparse.Namespace) -> None:
    """Cheap checks first, so a typo does not cost a model load."""
    if not args.prompt.strip():
        raise InputError("--prompt is empty; give the prompt text")
    if args.response is not None and not args.response.strip():
        raise InputError("--response is empty; omit it to generate, or give the response text")
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")


def _quiet_transformers() -> None:
    """Our own progress bars replace transformers' per-load weight bars."""
    from transformers.utils import logging

    logging.disable_progress_bar()


class Progress:
    """tqdm bars on stderr: one status line for the stages, one bar per counted stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}
        self.status = tqdm(total=0, bar_format="{desc}", file=sys.stderr, disable=not enabled, leave=False)

    def stage(self, text: str) -> None:
        self.status.set_description_str(text)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            self.bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, disable=not self.enabled, leave=False)
        self.bars[stage].update(done)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        for bar in [*self.bars.values(), self.status]:
            bar.close()
