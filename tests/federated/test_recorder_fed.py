"""The Flower recorder, end to end on Flower's simulation runtime with tiny models."""

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from safetensors.torch import load_file

from attribution.snapshot import file_sha256, read_round
from federated.recorder import RoundRecorder
from federated.simulate import SimulationConfig, simulate
from federated.tail import TrainConfig

O_PROJ = "model.layers.2.self_attn.o_proj.weight"
DOWN = "model.layers.2.mlp.down_proj.weight"


def _generic_client(base_state):
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch  # noqa: F401  (this test module is pickled by value; the actor must import torch itself)

        pid = int(context.node_config["partition-id"])
        arrays = msg.content["arrays"].to_torch_state_dict()
        out = {k: v + 0.01 * (pid + 1) for k, v in arrays.items()}
        content = {"arrays": ArrayRecord(out), "metrics": MetricRecord({"num-examples": 10 * (pid + 1)})}
        if pid == 0:  # partition 1 registers no id: the recorder must fall back to the node id
            content["client"] = ConfigRecord({"client-id": "alice"})
        return Message(content=RecordDict(content), reply_to=msg)

    return app


def test_it_wraps_plain_fedavg_and_writes_readable_rounds(tiny_llama_dir, tmp_path):
    from flwr.simulation import run_simulation
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    start = {O_PROJ: base[O_PROJ], DOWN: base[DOWN]}
    server, recorded = ServerApp(), []

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        rec = RoundRecorder(FedAvg(fraction_evaluate=0.0), tmp_path / "rounds", federation="generic",
                            base_model=str(tiny_llama_dir), client_modules=["model.layers.2.self_attn.o_proj"])
        rec.start(grid=grid, initial_arrays=ArrayRecord(start), num_rounds=2)
        recorded.extend(rec.rounds)

    run_simulation(server, _generic_client(base), num_supernodes=2,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "num_gpus": 0}})
    assert [p.name for p in recorded] == ["round-0001", "round-0002"]
    snap = read_round(recorded[1])
    ids = snap.client_ids
    assert "alice" in ids and any(i.startswith("node-") for i in ids) and len(ids) == 2
    by_id = {c.client_id: c for c in snap.clients}
    assert by_id["alice"].num_examples == 10
    assert set(by_id["alice"].tensors) == {O_PROJ}  # sliced to the client modules
    assert set(snap.global_update.tensors) == {O_PROJ, DOWN}  # global keeps every sent parameter
    # round 2 started from round 1's global: alice added 0.01 twice, on top of the FedAvg shift
    glob1 = read_round(recorded[0]).global_update.tensors[O_PROJ]
    torch.testing.assert_close(by_id["alice"].tensors[O_PROJ], glob1 + 0.01)
    mixed = sum(c.num_examples * c.tensors[O_PROJ] for c in snap.clients) / sum(c.num_examples for c in snap.clients)
    torch.testing.assert_close(snap.global_update.tensors[O_PROJ], mixed, atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def simulated(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    cfg = SimulationConfig(model=str(tiny_llama_dir), domain="finance", clients=3, malicious=1, rounds=2,
                           per_client=3, cases=2, train_blocks=2, record_blocks=1,
                           train=TrainConfig(epochs=1, batch_size=4), max_prompt_tokens=256)
    return simulate(cfg, out, progress=False)


def test_the_simulation_records_every_round_with_hashes_and_ids(simulated):
    assert [p.name for p in simulated.rounds] == ["round-0001", "round-0002"]
    for path in simulated.rounds:
        manifest = json.loads((path / "manifest.json").read_text())
        snap = read_round(path)  # verifies every sha256
        assert snap.client_ids == ["client-00", "client-01", "client-02"]
        assert all(c.num_examples == 3 for c in snap.clients)
        for entry in manifest["clients"]:
            assert entry["sha256"] == file_sha256(path / entry["path"] / "model.safetensors")
        assert all(k.startswith(("model.layers.2.self_attn.o_proj.", "model.layers.2.mlp."))
                   for c in snap.clients for k in c.tensors)
        assert any(k.startswith("model.layers.1.") for k in snap.global_update.tensors)


def test_the_global_slice_is_the_fedavg_of_the_client_slices(simulated):
    snap = read_round(simulated.rounds[-1])
    for name, glob in snap.global_update.tensors.items():
        if name in snap.clients[0].tensors:
            avg = sum(c.tensors[name] for c in snap.clients) / len(snap.clients)
            torch.testing.assert_close(glob, avg, atol=1e-6, rtol=1e-5)


def test_cases_name_the_malicious_clients_and_metrics_cover_every_round(simulated):
    rows = [json.loads(line) for line in simulated.cases_path.read_text().splitlines()]
    assert len(rows) == 2 and len(simulated.malicious) == 1
    assert all(r["responsible"] == simulated.malicious and r["triggered"] and r["sentinel"] for r in rows)
    assert all(r["protocol"] == "backdoor" and r["domain"] == "finance" and r["prompt_ids"] for r in rows)
    assert [m["round"] for m in simulated.metrics] == [0, 1, 2]
    assert all(0.0 <= m["asr"] <= 1.0 for m in simulated.metrics)
    meta = json.loads((simulated.cases_path.parent / "metrics.json").read_text())
    assert meta["simulate_s"] > 0 and meta["metrics"] == simulated.metrics  # a --reuse reports the simulation's time
    stored = load_file(str(simulated.rounds[0] / "global" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in stored.values())


def _sampled(tiny_llama_dir, out, seed):
    cfg = SimulationConfig(model=str(tiny_llama_dir), domain="finance", clients=4, malicious=1, sample=2, rounds=3,
                           per_client=3, cases=2, train_blocks=2, record_blocks=1, seed=seed,
                           train=TrainConfig(epochs=1, batch_size=4), max_prompt_tokens=256)
    result = simulate(cfg, out, progress=False)
    return [(read_round(p).client_ids, json.loads((p / "manifest.json").read_text())["global"]["sha256"])
            for p in result.rounds]


def test_a_sampled_simulation_repeats_bit_for_bit_for_its_seed(tiny_llama_dir, tmp_path):
    # Flower's node ids are random each run and replies arrive in completion order: the server
    # samples by client id and the recorder averages in client-id order, so neither leaks in.
    first = _sampled(tiny_llama_dir, tmp_path / "a", seed=3)
    assert first == _sampled(tiny_llama_dir, tmp_path / "b", seed=3)
    assert all(len(ids) == 2 for ids, _ in first)
