"""Round lineage: score each token with the clients of the round that made it.

Why. Under FedAvg every client of round r starts from round r-1's global
model. A token that model already picks (from the same prefix) is carried by
every client's update alike, so the published per-round scores there only say
who pushed it a little further this round. A backdoor installed in round 2
shows up in round 4 as a token that round 4's clients all inherit, and the
per-round top client of that token is close to a coin toss (see
benchmarks/RESULTS.md, "Missed sentinel tokens").

What. Given a federation's rounds, oldest first, the last one attributed:

1. The response is fixed on the attributed round (generated greedily, or the
   given one) and attributed there with the published method.
2. Walking back one round at a time, each round's global model is run
   teacher-forced over prompt + response. A token's *making round* is the
   first round of the unbroken run of rounds, ending at the attributed one,
   whose global models all pick it: the round whose starting model does not
   pick it but whose own global does.
3. Each token is scored with the published method at its making round, on
   that round's clients. Tokens the base model itself already picks were made
   by no round; they keep the attributed round's scores and are marked
   (``making_round`` None). So are tokens the attributed model would not pick
   itself (a teacher-forced response from elsewhere): no round made them
   either, and the attributed round scores them as published.
4. Rounds may have different clients (sampled federations), and raw scores of
   different rounds are not on one scale, so each token votes with its
   softmax shares over its making round's clients (0 for everyone else) and
   the sequence shares are the mean vote, as `aggregation="share"` does.
   Only tokens that some round made vote: no client is responsible for what
   the base model would have said anyway (a copied identifier, the rest of a
   word). A response with no such token lets every token vote.
5. How a made token votes is its *credit* (see CREDITS). The default,
   `"cumulative"`, votes with the mean of its share rows over every round of
   the chain up to its making round: a token pushed from round 1 on and tipped
   into the argmax in round 2 owes its place to all of those rounds. It costs
   an attribution pass on every such round. `"making"` votes with the making
   round's shares alone. On the accuracy benchmark cumulative credit meets the
   95% sentinel-token target on every run and making-round credit does not
   (Gemma-3-270m maths: 95.0% against 85.4%; benchmarks/RESULTS.md).

Cost: one teacher-forced forward pass per round walked back and item, plus one
attribution pass per round that made a token; at most two rounds are loaded
at a time. The walk stops as soon as no token is still inherited.

The chain should start at the federation's first round: a token whose run of
picks reaches the oldest round given, and which the base model would not pick,
is scored at that oldest round.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import AttributionConfig
from .errors import InputError
from .loaded import LoadedRound, load_round
from .manifest import load_manifest
from .result import AttributionResult

LINEAGE_FORMAT = "protoken-lineage/1"
# How a made token votes: with its making round's shares alone, or with the mean of its share
# rows over every round of the chain up to the making round. A backdoor token pushed by the
# malicious clients from round 1 and tipped into the argmax in round 2 by a benign client's
# drift is credited to the benign client by "making", to the malicious ones by "cumulative".
CREDITS = ("making", "cumulative")
DEFAULT_CREDIT = "cumulative"  # measured: benchmarks/RESULTS.md, "Round lineage"


@dataclass
class LineageResult:
    attributed: AttributionResult  # the published result on the attributed (last) round
    rounds: list[int]  # round numbers walked back through, oldest first
    making_round: list[int | None]  # per token; None: no round made it (scored at the attributed round)
    client_ids: list[str]  # every client that scores some token: the attributed round's first
    token_shares: torch.Tensor  # [T, K'] shares at each token's scoring round, 0 for its non-participants
    token_clients: list[str]  # per token, its top client at its scoring round
    sequence_shares: torch.Tensor  # [K'] mean share vote of the tokens some round made
    predicted_client: str
    scored_at: dict[int, AttributionResult]  # round number -> the published result used for its tokens
    credit: str  # one of CREDITS

    @property
    def response_tokens(self) -> list[str]:
        return self.attributed.response_tokens

    def to_dict(self) -> dict:
        return {"format": LINEAGE_FORMAT, "credit": self.credit, "rounds": self.rounds, "making_round": self.making_round,
                "client_ids": self.client_ids, "token_clients": self.token_clients,
                "token_shares": self.token_shares.tolist(), "sequence_shares": self.sequence_shares.tolist(),
                "predicted_client": self.predicted_client, "attributed": self.attributed.to_dict(),
                "scored_at": {str(r): asdict(res.provenance) for r, res in sorted(self.scored_at.items())}}

    def table(self, max_token_chars: int = 18) -> str:
        lines = [f"{'pos':>4}  {'token':<{max_token_chars}}  {'made in':>8}  {'top client':<16}  share"]
        for t, token in enumerate(self.response_tokens):
            made = "no round" if self.making_round[t] is None else f"round {self.making_round[t]}"
            k = self.client_ids.index(self.token_clients[t])
            shown = repr(token)[1:-1][:max_token_chars]
            lines.append(f"{t:>4}  {shown:<{max_token_chars}}  {made:>8}  {self.token_clients[t]:<16}"
                         f"  {float(self.token_shares[t, k]):.3f}")
        lines.append("")
        voted = ("over every round up to its making round" if self.credit == "cumulative"
                 else "at its making round")
        lines.append(f"sequence shares (mean vote of the tokens some round made, each {voted}; {self.credit} credit):")
        order = self.sequence_shares.argsort(descending=True).tolist()
        lines += [f"  {self.client_ids[k]:<16} {float(self.sequence_shares[k]):.3f}" for k in order]
        lines.append(f"predicted client: {self.predicted_client}")
        return "\n".join(lines)


def attribute_lineage(rounds: Sequence[str | Path | LoadedRound], items: Sequence[dict],
                      config: AttributionConfig | None = None, *, device: str = "cpu",
                      dtype: torch.dtype = torch.float32, verify: bool = True,
                      progress=None, credit: str = DEFAULT_CREDIT) -> list[LineageResult]:
    """Attribute `items` (as `attribute_batch` takes them) on the last of `rounds`, each token at its making round.

    `credit="cumulative"` votes each made token with the mean of its share rows over every
    round of the chain up to its making round, not the making round's alone (see CREDITS).
    """
    return attribute_lineage_credits(rounds, items, config, device=device, dtype=dtype, verify=verify,
                                     progress=progress, credit_modes=(credit,))[credit]


def attribute_lineage_credits(rounds: Sequence[str | Path | LoadedRound], items: Sequence[dict],
                              config: AttributionConfig | None = None, *, device: str = "cpu",
                              dtype: torch.dtype = torch.float32, verify: bool = True,
                              progress=None, credit_modes: Sequence[str] = CREDITS) -> dict[str, list[LineageResult]]:
    """`attribute_lineage` under each of `credit_modes`, from one walk back through the chain.

    The walk (teacher-forced passes, making rounds, their attribution passes) does not depend
    on the credit; only the rounds whose scores a token's vote takes do.
    """
    if isinstance(rounds, str | Path) or not isinstance(rounds, Sequence) or not rounds:
        raise InputError("rounds must be a non-empty list of round folders, oldest first, the attributed one last")
    if isinstance(credit_modes, str) or not credit_modes:
        raise InputError(f"credit_modes must be a non-empty list of {', '.join(CREDITS)}, got {credit_modes!r}")
    for credit in credit_modes:
        if credit not in CREDITS:
            raise InputError(f"credit must be one of {', '.join(CREDITS)}, got {credit!r}")
    chain = check_chain(rounds)  # every folder, before any is loaded: the walk may stop early

    def load(entry) -> LoadedRound:
        if isinstance(entry, LoadedRound):
            return entry
        return load_round(entry, device=device, dtype=dtype, config=config, verify=verify)

    cumulative = "cumulative" in credit_modes
    walk = _walk(rounds, chain, items, config, load, device, dtype, progress, whole=cumulative)
    if cumulative:  # every round up to the latest making round, for every item: those the walk never reached
        latest = max((m for item in walk.made for m in item.values() if m is not None), default=None)
        for entry, number in zip(rounds, chain, strict=True):
            if latest is not None and number <= latest and not _complete(walk.scored_at.get(number)):
                walk.scored_at[number] = _score(load(entry), walk.forced, _every(walk.forced), walk.config, progress)
    out = {}
    for credit in dict.fromkeys(credit_modes):
        spans = {m: [r for r in chain if r <= m] if credit == "cumulative" else [m] for m in chain}
        out[credit] = [_assemble(i, result, walk.made[i], walk.scored_at, walk.walked[::-1], spans, credit)
                       for i, result in enumerate(walk.attributed)]
    return out


@dataclass
class _Walk:
    config: AttributionConfig
    attributed: list[AttributionResult]  # per item, on the attributed round
    forced: list[dict]  # per item, its prompt and response ids (the responses are fixed on the attributed round)
    made: list[dict[int, int | None]]  # per item, token -> making round (None: no round)
    scored_at: dict[int, list]  # round number -> per item, its published result there (None: not needed)
    walked: list[int]  # round numbers walked back through, newest first


def _walk(rounds, chain: list[int], items, config, load, device, dtype, progress, *, whole: bool) -> _Walk:
    """Fix the responses on the last round, then walk back until every token's making round is known.

    `whole` (cumulative credit): from the latest making round back, every round the walk loads is
    scored for every item while it is loaded, so that no round is loaded a second time for it.
    """
    from . import attribute_batch

    current = load(rounds[-1])
    config = config or current.config
    attributed = attribute_batch(current, items, config, progress=progress)
    forced = [{"prompt_ids": r.prompt_ids, "response_ids": r.response_ids} for r in attributed]
    walked = [chain[-1]]
    made: list[dict[int, int | None]] = [{} for _ in attributed]  # item -> token -> making round (decided)
    alive = [{t for t, c in enumerate(picks) if c == r.response_ids[t]}  # still picked by every round so far
             for r, picks in zip(attributed, greedy_picks(current.model, forced), strict=True)]
    scored_at = {current.info.round: attributed}
    found = False  # some round made a token: the latest making round is known
    for index in range(len(rounds) - 2, -2, -1):
        if not any(alive):
            break
        earlier = load(rounds[index]) if index >= 0 else None
        if earlier is not None:
            walked.append(chain[index])
        model = earlier.model if earlier is not None else _base_model(current, device, dtype)
        broke = [{t for t in live if picks[t] != forced[i]["response_ids"][t]}
                 for i, (live, picks) in enumerate(zip(alive, greedy_picks(model, forced), strict=True))]
        found = found or any(broke)
        if whole and found:
            if not _complete(scored_at.get(current.info.round)):
                scored_at[current.info.round] = _score(current, forced, _every(forced), config, progress)
        elif current.info.round not in scored_at and any(broke):
            scored_at[current.info.round] = _score(current, forced, broke, config, progress)
        for i, gone in enumerate(broke):
            made[i].update({t: current.info.round for t in gone})
            alive[i] -= gone
        if earlier is None:  # the base model picks what is still alive: no round made it
            for i, live in enumerate(alive):
                made[i].update({t: None for t in live})
            alive = [set() for _ in alive]
        current = earlier
        if progress is not None:
            progress("rounds walked back", 1, len(rounds))
    if whole and found and current is not None and not _complete(scored_at.get(current.info.round)):
        scored_at[current.info.round] = _score(current, forced, _every(forced), config, progress)  # stopped here
    return _Walk(config=config, attributed=attributed, forced=forced, made=made, scored_at=scored_at, walked=walked)


def _every(forced: list[dict]) -> list[set[int]]:
    """`_score`'s `wanted` for scoring every item whole (any non-empty set marks an item as needed)."""
    return [{0}] * len(forced)


def _complete(results: list | None) -> bool:
    return results is not None and all(r is not None for r in results)


def greedy_picks(model: torch.nn.Module, items: Sequence[dict]) -> list[list[int]]:
    """Per response token, the token `model` picks greedily from the same prefix (teacher-forced)."""
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for item in items:
            prompt, response = list(item["prompt_ids"]), list(item["response_ids"])
            logits = model(input_ids=torch.tensor([prompt + response], device=device)).logits[0]
            start = len(prompt) - 1  # logits at position p predict token p + 1
            out.append(logits[start:start + len(response)].argmax(-1).tolist())
    return out


def _score(loaded: LoadedRound, forced: list[dict], wanted: list[set[int]], config, progress) -> list:
    """Published results on `loaded` for the items that have tokens to score there (None for the others)."""
    from . import attribute_batch

    needed = [i for i, w in enumerate(wanted) if w]
    results = attribute_batch(loaded, [forced[i] for i in needed], config, progress=progress)
    out: list[AttributionResult | None] = [None] * len(forced)
    for i, result in zip(needed, results, strict=True):
        out[i] = result
    return out


def _assemble(i: int, attributed: AttributionResult, made: dict[int, int | None],
              scored_at: dict[int, list], rounds: list[int], spans: dict[int, list[int]],
              credit: str) -> LineageResult:
    own = attributed.provenance.round
    making = [made.get(t) for t in range(len(attributed.response_ids))]
    credited = [[own] if m is None else spans[m] for m in making]  # per token, the rounds whose votes it takes
    used = {r: scored_at[r][i] for r in {r for span in credited for r in span}}
    ids = list(attributed.client_ids)
    for r in sorted(used, reverse=True):
        ids += [c for c in used[r].client_ids if c not in ids]
    shares = torch.zeros(len(making), len(ids), dtype=torch.float64)
    for t, span in enumerate(credited):
        for r in span:
            shares[t, [ids.index(c) for c in used[r].client_ids]] += used[r].token_shares[t] / len(span)
    # A token's top client: its raw-score argmax when one round scores it (as published), else the vote's.
    tops = [used[span[0]].client_ids[int(used[span[0]].token_scores[t].argmax())] if len(span) == 1
            else ids[int(shares[t].argmax())] for t, span in enumerate(credited)]
    voting = [t for t, m in enumerate(making) if m is not None] or list(range(len(making)))
    sequence = shares[voting].mean(dim=0) if voting else torch.zeros(len(ids), dtype=torch.float64)
    return LineageResult(attributed=attributed, rounds=rounds, making_round=making, client_ids=ids,
                         token_shares=shares, token_clients=tops, sequence_shares=sequence,
                         predicted_client=ids[int(sequence.argmax())], scored_at=used, credit=credit)


def check_chain(rounds: Sequence[str | Path | LoadedRound]) -> list[int]:
    """The rounds' numbers; refuses a list that is not one federation's rounds, oldest first."""
    seen = []
    for entry in rounds:
        if isinstance(entry, LoadedRound):
            info = entry.info
            seen.append((info.federation, info.round, info.base_model, info.root or f"round {info.round}"))
        elif isinstance(entry, str | Path):
            manifest = load_manifest(entry)
            seen.append((manifest.federation, manifest.round, manifest.base_model, str(entry)))
        else:
            raise InputError(f"rounds must hold round folders (str or Path) or loaded rounds, got "
                             f"{type(entry).__name__}")
    for (fed, number, base, where), (next_fed, next_number, next_base, next_where) in itertools.pairwise(seen):
        if next_fed != fed:
            raise InputError(f"{next_where} belongs to federation {next_fed!r}, but {where} to {fed!r}; "
                             "a lineage needs rounds of one federation")
        if next_base != base:
            raise InputError(f"{next_where} has base model {next_base!r}, but {where} has {base!r}")
        if next_number <= number:
            raise InputError(f"rounds must be given oldest first: {where} (round {number}) comes before "
                             f"{next_where} (round {next_number})")
    return [number for _, number, _, _ in seen]


def _base_model(loaded: LoadedRound, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from .shipped import load_model

    model = load_model(loaded.info.base_model_dir, dtype=dtype, device=device)
    return model.requires_grad_(False)
