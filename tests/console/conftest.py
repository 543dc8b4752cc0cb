"""Fixtures for console tests: two federations, named users with different roles, artifacts in a temp folder."""

from __future__ import annotations

import pytest
from console_data import make_federation, make_user, member


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "artifacts")},
        },
    }


@pytest.fixture
def fed_a(db):
    return make_federation("fed-a")


@pytest.fixture
def fed_b(db):
    return make_federation("fed-b", client_ids=("dave", "erin"), rounds=1)


@pytest.fixture
def users(fed_a, fed_b) -> dict:
    """alice_op operates fed-a, audrey audits it, fin does its finance, bob_b operates only fed-b; root is superuser."""
    named = {
        "operator": make_user("alice_op"),
        "auditor": make_user("audrey"),
        "finance": make_user("fin"),
        "outsider": make_user("bob_b"),
        "superuser": make_user("root", superuser=True),
    }
    member(named["operator"], fed_a, "operator")
    member(named["auditor"], fed_a, "auditor")
    member(named["finance"], fed_a, "finance")
    member(named["outsider"], fed_b, "operator")
    return named


@pytest.fixture
def as_user(client):
    """`as_user(user)` signs the Django test client in as `user` and returns it."""

    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


@pytest.fixture(scope="session")
def tiny_round_folder(tmp_path_factory):
    """A real `protoken-round/1` folder of federation "engine-fed": a tiny Llama and 3 clients perturbing its slice."""
    import torch
    from safetensors.torch import load_file

    from attribution.snapshot import slice_state_dict, tracked_module_names, write_round
    from attribution.snapshot_types import ClientUpdate
    from attribution.tiny import save_tiny_model

    base = save_tiny_model("llama", tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)
    base_slice = slice_state_dict(load_file(base / "model.safetensors"), tracked_module_names(base))
    gen = torch.Generator().manual_seed(0)
    updates = [
        ClientUpdate(cid, num_examples=10 * (i + 1), sha256="",
                     tensors={k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base_slice.items()})
        for i, cid in enumerate(("alice", "bob", "carol"))
    ]
    total = sum(u.num_examples for u in updates)
    glob = {k: sum(u.num_examples / total * u.tensors[k] for u in updates) for k in base_slice}
    out = tmp_path_factory.mktemp("rounds") / "round-0"
    return write_round(out, federation="engine-fed", round=0, base_model=str(base), kind="weights",
                       global_update=glob, clients=updates)


@pytest.fixture
def engine_generation(db, tiny_round_folder):
    """A generation of "engine-fed" attributed by the real engine (teacher-forced), stored by the audits service."""
    from audits import engine
    from audits.services import Submission, generation_attribute, generation_submit
    from registry.models import Client, Federation
    from registry.services import round_register_from_folder

    federation = Federation.objects.create(slug="engine-fed", name="Engine Federation")
    for cid in ("alice", "bob", "carol"):
        Client.objects.create(federation=federation, client_id=cid)
    round_register_from_folder(federation=federation, folder=tiny_round_folder)
    submission = Submission(prompt="The cat", response=" sat on the mat.", chat_template=False)
    generation = generation_submit(federation=federation, submission=submission, enqueue=False)
    engine.round_cache().clear()
    return generation_attribute(generation_id=generation.pk)
