"""Attribution speed and memory on the shipped SmolLM2-135M-Instruct, every figure next to its reference.

    python benchmarks/attribution_speed.py            # full run (10 prompts x 32 tokens, K = 8, 64, 512)
    python benchmarks/attribution_speed.py --quick    # 3 prompts x 8 tokens, K = 8, 32

The round: K clients that each hold a *slice* of the last block (its
``self_attn.o_proj`` and ``mlp`` tensors, nothing else). Client i's slice is
the base model's tensor plus Gaussian noise, ``w + noise * std(w) * N(0, 1)``,
drawn from a generator seeded with (i, tensor index), so every run writes the
same round; its FedAvg weight is ``num_examples = 50 + (37 i mod 100)``. The
global model is the exact FedAvg of the client slices. Tensors are generated
on demand while the round is written (a lazy mapping given to `write_round`),
so writing K = 512 clients (~6 GB) never holds more than one client in memory.

Sections:

(a) fast vs reference as published: `reference_attribute` (per token a full
    forward pass without KV cache and a backward pass of the raw logit through
    the whole model, then every client's module copy on the recorded inputs)
    greedily generates and attributes 32 tokens; the fast engine attributes the
    same response teacher-forced (`teacher_forced_attribute`, one pass), and
    `generate_and_attribute` does the whole task from the prompt. Reported:
    speed-ups, max |fast - reference| / max |reference score| per response,
    identical predicted clients and token ids.
(b) `generate_and_attribute` vs plain `model.generate` of the same tokens
    (EOS disabled so both produce exactly N tokens), run alternately per prompt.
(c) K = 8, 64, 512: each K in a fresh subprocess that loads the round and
    attributes the (a) responses teacher-forced; time per response (median)
    and peak RSS (`resource.getrusage(...).ru_maxrss`).
(d) bytes of one client slice file vs the full model file; a slice that also
    carries ``lm_head`` (tied to the input embedding in SmolLM2) separately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three prime numbers.",
    "How do I reverse a list in Python?",
    "What causes rain?",
    "Give me a tip for learning a language.",
    "Who wrote Romeo and Juliet?",
    "What is 12 times 7?",
    "Describe a cat in five words.",
    "Why is the sky blue?",
    "Name a famous painting.",
]
MODEL = "smollm2-135m-instruct"


class NoisySlice(Mapping):
    """A client's slice, generated on access: base + noise * std(base) * N(0, 1), seeded per tensor."""

    def __init__(self, base: dict[str, torch.Tensor], seed: int, noise: float):
        self.base, self.seed, self.noise = base, seed, noise
        self.names = sorted(base)

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self.base[name]
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.names.index(name))
        return tensor + self.noise * tensor.std() * torch.randn(tensor.shape, generator=gen)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def base_slice() -> dict[str, torch.Tensor]:
    from attribution.shipped import base_model_spec, resolve_base_model
    from attribution.snapshot import tracked_module_names

    model_dir = resolve_base_model(MODEL)
    spec = base_model_spec(model_dir)
    modules = tracked_module_names(model_dir, 1, include_lm_head=False)
    return {k: spec.load_tensor(k) for k in spec.shapes if any(k.startswith(m + ".") for m in modules)}


def write_noisy_round(out: Path, base: dict[str, torch.Tensor], clients: int, noise: float) -> Path:
    from attribution import write_round
    from attribution.snapshot_types import ClientUpdate

    updates = [ClientUpdate(f"client-{i:03d}", 50 + (37 * i) % 100, tensors=NoisySlice(base, i, noise))
               for i in range(clients)]
    total = sum(u.num_examples for u in updates)
    fedavg = {k: torch.zeros_like(v) for k, v in base.items()}
    for u in updates:  # one client's tensors at a time
        for name in fedavg:
            fedavg[name] += u.tensors[name] * (u.num_examples / total)
    return write_round(out, federation="speed-bench", round=0, base_model=MODEL, kind="weights",
                       global_update=fedavg, clients=updates)


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


# ---------------------------------------------------------------- (a) and (b)


def fast_vs_reference(round_dir: Path, prompts: list[str], new_tokens: int) -> dict:
    from attribution import (
        encode_prompt,
        generate_and_attribute,
        load_round,
        reference_attribute,
        teacher_forced_attribute,
    )

    loaded = load_round(round_dir)
    ids = [encode_prompt(loaded, p) for p in prompts]
    teacher_forced_attribute(loaded, ids[0], ids[0][:4])  # warm-up, not counted
    rows = []
    for prompt in ids:
        ref, t_ref = timed(lambda p=prompt: reference_attribute(loaded, p, max_new_tokens=new_tokens, eos=False))
        tf, t_tf = timed(lambda p=prompt, r=ref: teacher_forced_attribute(loaded, p, r.response_ids))
        gen, t_gen = timed(lambda p=prompt: generate_and_attribute(loaded, p, max_new_tokens=new_tokens, eos=False))
        scale = float(ref.token_scores.abs().max())
        rows.append({
            "prompt_tokens": len(prompt), "t_ref": t_ref, "t_tf": t_tf, "t_gen": t_gen,
            "diff_tf": float((tf.token_scores - ref.token_scores).abs().max()) / scale,
            "diff_gen": float((gen.token_scores - ref.token_scores).abs().max()) / scale,
            "same_pred": tf.predicted_client == ref.predicted_client == gen.predicted_client,
            "same_tokens": gen.response_ids == ref.response_ids, "response_ids": ref.response_ids,
            "prompt_ids": prompt,
        })
    return {"rows": rows, "loaded": loaded}


def attributed_vs_plain_generate(loaded, rows: list[dict], new_tokens: int, repeats: int) -> dict:
    from attribution import generate_and_attribute

    plain_times, ours_times, same = [], [], True
    for row in rows:
        prompt = torch.tensor([row["prompt_ids"]])
        for _ in range(repeats):
            # EOS off on both sides (exactly `new_tokens` tokens); the explicit mask keeps generate from
            # masking the prompt's <|im_end|> tokens, which share their id with the pad token.
            with torch.no_grad():
                out, t_plain = timed(lambda p=prompt: loaded.model.generate(
                    p, attention_mask=torch.ones_like(p), max_new_tokens=new_tokens, do_sample=False,
                    eos_token_id=None))
            ours, t_ours = timed(lambda r=row: generate_and_attribute(
                loaded, r["prompt_ids"], max_new_tokens=new_tokens, eos=False))
            plain_times.append(t_plain)
            ours_times.append(t_ours)
            same &= out[0, prompt.shape[1]:].tolist() == ours.response_ids
    return {"plain": statistics.median(plain_times), "ours": statistics.median(ours_times), "same_tokens": same,
            "ratio_of_sums": sum(ours_times) / sum(plain_times)}


# ---------------------------------------------------------------- (c) K scaling, one subprocess per K


def k_worker(round_dir: str, items_file: str) -> None:
    """Runs in a fresh process: load, attribute each item teacher-forced, print JSON with times and RSS."""
    from attribution import load_round, teacher_forced_attribute

    items = json.loads(Path(items_file).read_text())
    loaded, t_load = timed(lambda: load_round(round_dir))
    teacher_forced_attribute(loaded, items[0]["prompt_ids"], items[0]["response_ids"][:2])  # warm-up
    times, clients = [], []
    for item in items:
        result, seconds = timed(lambda i=item: teacher_forced_attribute(loaded, i["prompt_ids"], i["response_ids"]))
        times.append(seconds)
        clients.append(result.timings["clients_s"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"t_load": t_load, "t_response": statistics.median(times),
                      "t_clients": statistics.median(clients), "rss": rss,
                      "source": type(loaded.source).__name__}))


def k_scaling(base: dict, ks: list[int], noise: float, rows: list[dict], work: Path) -> list[dict]:
    items = work / "items.json"
    items.write_text(json.dumps([{"prompt_ids": r["prompt_ids"], "response_ids": r["response_ids"]} for r in rows]))
    out = []
    for k in ks:
        round_dir, t_write = timed(lambda k=k: write_noisy_round(work / f"round-k{k}", base, k, noise))
        proc = subprocess.run([sys.executable, __file__, "--k-worker", str(round_dir), str(items)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"K={k} worker failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(k=k, t_write=t_write, disk=sum(f.stat().st_size for f in round_dir.rglob("*.safetensors")))
        out.append(row)
        _remove_tree(round_dir)
    return out


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- (d) slice size


def slice_sizes(base: dict, round_dir: Path, work: Path) -> dict:
    from safetensors.torch import save_file

    from attribution.shipped import base_model_spec, resolve_base_model

    model_dir = resolve_base_model(MODEL)
    full = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    client = next((round_dir / "clients").iterdir()) / "model.safetensors"
    head = base_model_spec(model_dir).load_tensor("lm_head.weight")
    with_head = work / "slice-with-lm_head.safetensors"
    save_file({**{k: v.contiguous() for k, v in base.items()}, "lm_head.weight": head.contiguous()}, str(with_head))
    return {"full": full, "slice": client.stat().st_size, "slice_with_head": with_head.stat().st_size,
            "head": head.numel() * head.element_size()}


# ---------------------------------------------------------------- report


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(args, a: dict, b: dict, c: list[dict], d: dict) -> str:
    rows = a["rows"]
    t_ref, t_tf, t_gen = (sum(r[k] for r in rows) for k in ("t_ref", "t_tf", "t_gen"))
    lines = [
        f"Attribution speed: {MODEL}, {len(rows)} prompts x {args.new_tokens} new tokens, 8 clients holding "
        f"last-block slices (noise {args.noise}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}",
        "",
        "| measure | value | reference | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
        _row("(a) attribute a response: fast teacher-forced vs reference, mean s/response", t_tf / len(rows),
             t_ref / len(rows), t_ref / t_tf, ">= 50x faster", t_ref / t_tf >= 50, speed=True),
        _row("(a) whole task from the prompt: generate_and_attribute vs reference, mean s/response",
             t_gen / len(rows), t_ref / len(rows), t_ref / t_gen, "(information)", None, speed=True),
        f"| (a) max \\|fast - ref\\| / max \\|ref score\\| (teacher-forced; generated) | "
        f"{max(r['diff_tf'] for r in rows):.2e}; {max(r['diff_gen'] for r in rows):.2e} | 0 | | <= 1e-4 | "
        f"{_yes(max(max(r['diff_tf'], r['diff_gen']) for r in rows) <= 1e-4)} |",
        f"| (a) identical predicted client / identical tokens (of {len(rows)}) | "
        f"{sum(r['same_pred'] for r in rows)} / {sum(r['same_tokens'] for r in rows)} | {len(rows)} | | all | "
        f"{_yes(all(r['same_pred'] and r['same_tokens'] for r in rows))} |",
        _row("(b) generate_and_attribute vs plain model.generate, median s/response", b["ours"], b["plain"],
             b["ours"] / b["plain"], "<= 1.2x", b["ours"] / b["plain"] <= 1.2, speed=False)
        + f" (same tokens: {_yes(b['same_tokens'])}; ratio of sums {b['ratio_of_sums']:.2f}x)",
    ]
    k0 = c[0] if c else None
    for row in c:
        growth, linear = row["t_response"] / k0["t_response"], row["k"] / k0["k"]
        lines.append(_row(f"(c) K={row['k']}: s/response teacher-forced (clients part {row['t_clients']:.3f} s; "
                          f"{row['source']}; round {mib(row['disk'])})", row["t_response"], k0["t_response"],
                          growth, f"<= {linear:g}x (linear)", growth <= linear, speed=False))
        extra = row["rss"] - k0["rss"]
        lines.append(f"| (c) K={row['k']}: peak RSS | {mib(row['rss'])} | {mib(k0['rss'])} (K={k0['k']}) | "
                     f"+{mib(extra)} | <= +1024 MiB | {_yes(extra <= 2**30)} |")
    lines += [
        f"| (d) one client slice (o_proj + mlp of the last block) vs full model file | {mib(d['slice'])} | "
        f"{mib(d['full'])} | {d['slice'] / d['full']:.2%} | <= 5% | {_yes(d['slice'] / d['full'] <= 0.05)} |",
        f"| (d) the same slice plus lm_head (reported separately) | {mib(d['slice_with_head'])} | {mib(d['full'])} | "
        f"{d['slice_with_head'] / d['full']:.2%} | (information; lm_head alone {mib(d['head'])}) | |",
    ]
    return "\n".join(lines)


def _row(name, value, ref, ratio, target, met, *, speed: bool) -> str:
    return f"| {name} | {value:.3f} s | {ref:.3f} s | {ratio:.1f}x | {target} | {_yes(met)} |"


def _yes(flag) -> str:
    return "" if flag is None else ("yes" if flag else "NO")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 prompts x 8 tokens, K = 8, 32")
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--ks", default="8,64,512", help="client counts for (c), comma-separated")
    parser.add_argument("--noise", type=float, default=0.02, help="relative noise of the client slices")
    parser.add_argument("--repeats", type=int, default=1, help="repeats per prompt in (b)")
    parser.add_argument("--workdir", help="where rounds are written (default: a temp folder, removed)")
    parser.add_argument("--k-worker", nargs=2, metavar=("ROUND", "ITEMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.k_worker:
        k_worker(*args.k_worker)
        return 0
    if args.quick:
        args.prompts, args.new_tokens, args.ks = 3, 8, "8,32"
    if not 1 <= args.prompts <= len(PROMPTS):
        parser.error(f"--prompts must be in 1..{len(PROMPTS)}")
    ks = [int(k) for k in args.ks.split(",") if k]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        base = base_slice()
        round8 = write_noisy_round(work / "round-8", base, 8, args.noise)
        a = fast_vs_reference(round8, PROMPTS[: args.prompts], args.new_tokens)
        b = attributed_vs_plain_generate(a.pop("loaded"), a["rows"], args.new_tokens, args.repeats)
        d = slice_sizes(base, round8, work)
        c = k_scaling(base, ks, args.noise, a["rows"][:3], work)
    print(report(args, a, b, c, d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
