"""A small backdoor federation on the shipped SmolLM2, for `make demo`.

`run_backdoor_demo` trains through Flower (clients in Ray actors, a
`RoundRecorder`-wrapped FedAvg), writes the round folders and cases, and
returns them; `attribute_demo_cases` then attributes a few held-out
triggered prompts with the engine and returns per-client shares next to the
ground truth. The defaults are the accuracy benchmark's quick backdoor run
(6 clients, 2 malicious, 4 rounds, maths): about three minutes of training on
two CPU cores, and the smallest setting seen here where the backdoor takes
(the earlier default, 1 malicious client of 4 on finance, did not over 3 rounds). The returned metrics carry
the global model's attack success rate so a caller can check it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federated.simulate import SimulationConfig, SimulationResult, simulate
from federated.tail import TrainConfig


@dataclass
class DemoResult:
    simulation: SimulationResult
    rounds: list[Path]
    cases: list[dict]
    asr: float  # attack success rate of the final global model on held-out triggered prompts
    federation: str
    sentinel: str


# The demo federation's size, shared with `manage.py demo`'s option defaults.
CLIENTS, MALICIOUS, ROUNDS = 6, 2, 4


def run_backdoor_demo(out_dir: str | Path, *, clients: int = CLIENTS, malicious: int = MALICIOUS, rounds: int = ROUNDS,
                      domain: str = "math", per_client: int = 16, cases: int = 4,
                      model: str = "smollm2-135m-instruct", epochs: int = 3, lr: float = 2e-3,
                      seed: int = 0, federation: str = "backdoor-demo", progress: bool = True) -> DemoResult:
    """Run the demo federation; returns its round folders, cases and final attack success rate."""
    cfg = SimulationConfig(protocol="backdoor", model=model, domain=domain, clients=clients, malicious=malicious,
                           rounds=rounds, per_client=per_client, cases=cases, train_blocks=2,
                           train=TrainConfig(epochs=epochs, lr=lr, seed=seed), seed=seed,
                           federation=federation)
    sim = simulate(cfg, out_dir, progress=progress)
    return DemoResult(sim, sim.rounds, sim.cases, float(sim.metrics[-1].get("asr", 0.0)), cfg.federation,
                      cfg.sentinel)


def attribute_demo_cases(result: DemoResult, *, limit: int = 3, max_new_tokens: int = 24) -> list[dict]:
    """Attribute up to `limit` cases on the last round: shares per client next to the ground truth."""
    from attribution import attribute, load_round

    loaded = load_round(result.rounds[-1])
    rows = []
    for case in result.cases[:limit]:
        res = attribute(loaded, prompt_ids=case["prompt_ids"], max_new_tokens=max_new_tokens)
        rows.append({"prompt": case["prompt"], "response": "".join(res.response_tokens),
                     "shares": dict(zip(res.client_ids, [round(float(s), 4) for s in res.sequence_shares],
                                        strict=True)),
                     "predicted": res.predicted_client, "truth": case["responsible"]})
    return rows
