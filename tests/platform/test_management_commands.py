"""create_federation, import_round and attribute from the command line, with their error messages."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from audits import engine
from audits.models import Generation
from audits.services import DEFAULT_LINEAGE_CREDIT
from django.core.management import CommandError, call_command
from registry.models import Federation, Round

pytestmark = pytest.mark.django_db


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_creates_a_federation_and_refuses_a_duplicate(db):
    assert "created federation demo" in _call("create_federation", "demo", "--name", "Demo", "--auto-register-clients")
    assert Federation.objects.get(slug="demo").auto_register_clients
    with pytest.raises(CommandError, match="federation_exists: federation 'demo' already exists"):
        _call("create_federation", "demo")


def test_it_imports_a_round_folder_then_attributes_a_prompt(federation, make_round):
    engine.round_cache().clear()
    folder = make_round()
    assert "registered round 0 of fed-a (3 clients)" in _call("import_round", str(folder))
    assert "already registered: round 0" in _call("import_round", str(folder))
    assert Round.objects.filter(federation=federation).count() == 1
    table = _call("attribute", "fed-a", "--prompt", "The cat", "--response", " sat", "--no-chat-template")
    assert {"alice", "bob", "carol"} <= set(table.split())
    assert "rank" in table and "share" in table
    assert Generation.objects.get().status == "done"


def test_it_attributes_with_a_round_lineage(federation, make_round):
    engine.round_cache().clear()
    for n in (0, 1):
        _call("import_round", str(make_round(number=n, seed=n)))
    table = _call("attribute", "fed-a", "--prompt", "The cat", "--response", " sat", "--no-chat-template", "--lineage")
    line = table.split("lineage (top client at making round): ")[1].splitlines()[0]
    marks = re.findall(r"->(\w+)@(\w+)", line)
    assert len(marks) == Generation.objects.get().runs.get().num_tokens
    assert all(client in ("alice", "bob", "carol") and made in ("r0", "r1", "none") for client, made in marks)
    assert f"lineage predicted client ({DEFAULT_LINEAGE_CREDIT} credit): " in table
    cumulative = _call("attribute", "fed-a", "--prompt", "The cat", "--response", " sat", "--no-chat-template",
                       "--lineage", "--lineage-credit", "cumulative")
    assert "lineage predicted client (cumulative credit): " in cumulative
    assert Generation.objects.order_by("-pk").first().lineage_credit == "cumulative"
    with pytest.raises(CommandError, match="lineage_credit needs lineage: true"):
        _call("attribute", "fed-a", "--prompt", "The cat", "--lineage-credit", "cumulative")


def test_it_reports_a_bad_round_folder(federation, make_round):
    folder = make_round()
    (folder / "clients" / "bob" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(CommandError, match="hash_mismatch: .*bob"):
        _call("import_round", str(folder))
    with pytest.raises(CommandError, match="no such file or folder"):
        _call("import_round", "/nonexistent/round")


def test_it_reports_an_empty_prompt(federation):
    with pytest.raises(CommandError, match="invalid_prompt: prompt must not be empty"):
        _call("attribute", "fed-a", "--prompt", " ")
