"""The generation page: tokens coloured by top client with shares, sequence shares, responsible set, provenance."""

from __future__ import annotations

import json
import re

import pytest
from audits.models import AttributionRun, ClientAttribution, TokenAttribution
from console.models import Membership
from console_data import attributed_generation, make_user, softmax
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _token_spans(html: str) -> list[dict]:
    pattern = r'<span class="tok" tabindex="0" data-pos="(\d+)" data-client="([^"]+)" data-share="([\d.]+)" title="([^"]+)" style="[^"]+">(.*?)</span>'
    return [{"pos": int(p), "client": c, "share": float(s), "title": t, "text": x}
            for p, c, s, t, x in re.findall(pattern, html, flags=re.S)]


def _inspector(html: str) -> dict:
    return json.loads(re.search(r'<script id="inspector-data" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_it_shows_each_token_with_its_top_client_and_share(as_user, users, fed_a):
    tokens = [("Par", [2.0, 0.0, 0.0]), ("is", [0.0, 1.0, 0.5]), (" <b>", [0.1, 0.2, 3.0])]
    generation = attributed_generation(fed_a, shares={"alice": 0.5, "bob": 0.3, "carol": 0.2}, tokens=tokens,
                                       responsible=("alice", "bob"))
    html = as_user(users["auditor"]).get(reverse("console:generation", args=["fed-a", generation.pk])).content.decode()
    spans = _token_spans(html)
    assert [s["client"] for s in spans] == ["alice", "bob", "carol"]
    assert [s["text"] for s in spans] == ["Par", "is", " &lt;b&gt;"]  # token text is escaped, whitespace kept
    assert spans[0]["share"] == pytest.approx(softmax([2.0, 0.0, 0.0])[0], abs=1e-4)
    assert spans[1]["title"] == f"bob · {softmax([0.0, 1.0, 0.5])[1] * 100:.1f}%"
    data = _inspector(html)
    assert data["clients"] == ["alice", "bob", "carol"]
    assert data["tokens"][2]["shares"] == pytest.approx(softmax([0.1, 0.2, 3.0]))
    assert "50.0%" in html and "30.0%" in html and "20.0%" in html  # sequence shares bar list
    assert re.search(r'Responsible set:</strong> <span class="pill responsible">alice</span> <span class="pill responsible">bob</span>', html)


def test_it_shows_the_provenance_of_the_run(as_user, users, fed_a):
    generation = attributed_generation(fed_a, shares={"alice": 0.5, "bob": 0.3, "carol": 0.2}, tokens=[("a", [1.0, 0, 0])],
                                       method_version="protoken/9.9")
    run = AttributionRun.objects.get(generation=generation)
    html = as_user(users["auditor"]).get(reverse("console:generation", args=["fed-a", generation.pk])).content.decode()
    assert "protoken/9.9" in html and run.config_hash in html
    for module in run.tracked_modules:
        assert module in html
    assert run.snapshot_hashes["global"] in html
    for sha in run.snapshot_hashes["clients"].values():
        assert sha in html
    assert "&quot;aggregation&quot;: &quot;sum&quot;" in html  # the config, pretty-printed


def test_it_renders_a_real_engine_run_token_by_token(client, engine_generation):
    user = make_user("eve")
    Membership.objects.create(user=user, federation=engine_generation.federation, role="auditor")
    client.force_login(user)
    html = client.get(reverse("console:generation", args=["engine-fed", engine_generation.pk])).content.decode()
    run = AttributionRun.objects.get(generation=engine_generation)
    rows = list(TokenAttribution.objects.filter(run=run).order_by("position"))
    spans = _token_spans(html)
    assert "".join(s["text"] for s in spans) == " sat on the mat."
    assert [s["client"] for s in spans] == [r.top_client.client_id for r in rows]
    assert [s["share"] for s in spans] == pytest.approx([r.top_share for r in rows], abs=1e-4)
    data = _inspector(html)
    for token, row in zip(data["tokens"], rows, strict=True):
        assert sum(token["shares"]) == pytest.approx(1.0)
        assert max(token["shares"]) == pytest.approx(row.top_share, rel=1e-6)
    predicted = ClientAttribution.objects.get(run=run, rank=1).client.client_id
    assert f"Predicted client: <strong>{predicted}</strong>" in html
    assert run.method_version in html and run.snapshot_hashes["global"] in html


def test_it_shows_the_failure_of_a_failed_generation(as_user, users, fed_a):
    generation = attributed_generation(fed_a, shares={"alice": 1.0}, tokens=[("a", [1.0])])
    AttributionRun.objects.filter(generation=generation).delete()
    generation.status, generation.failure_code, generation.failure_reason = "failed", "invalid_round", "sha256 mismatch"
    generation.save()
    html = as_user(users["operator"]).get(reverse("console:generation", args=["fed-a", generation.pk])).content.decode()
    assert "invalid_round" in html and "sha256 mismatch" in html and 'class="tok"' not in html


def test_it_answers_404_for_an_unknown_run(as_user, users, fed_a):
    generation = attributed_generation(fed_a, shares={"alice": 1.0}, tokens=[("a", [1.0])])
    response = as_user(users["operator"]).get(reverse("console:generation", args=["fed-a", generation.pk]), {"run": "999999"})
    assert response.status_code == 404
    assert "no attribution run &#x27;999999&#x27;" in response.content.decode()


def test_it_shows_the_round_lineage_when_the_run_has_one(as_user, users, fed_a):
    tokens = [("ZE", [2.0, 0.0, 0.0]), ("TA", [0.0, 1.0, 0.5])]
    generation = attributed_generation(fed_a, shares={"alice": 0.5, "bob": 0.3, "carol": 0.2}, tokens=tokens)
    run = AttributionRun.objects.get(generation=generation)
    page = reverse("console:generation", args=["fed-a", generation.pk])
    assert 'id="lineage"' not in as_user(users["auditor"]).get(page).content.decode()  # no lineage asked for
    run.lineage = {"format": "protoken-lineage/1", "rounds": [1, 2], "making_round": [1, None],
                   "client_ids": ["alice", "bob", "carol", "dave"], "token_clients": ["dave", "bob"],
                   "token_shares": [[0.1, 0.1, 0.1, 0.7], [0.2, 0.6, 0.2, 0.0]],
                   "sequence_shares": [0.1, 0.1, 0.1, 0.7], "predicted_client": "dave", "scored_at": {}}
    run.save(update_fields=["lineage"])
    html = as_user(users["auditor"]).get(page).content.decode()
    section = html[html.index('id="lineage"'):]
    rows = re.findall(r"<tr><td>(\d+)</td><td><code>(.*?)</code></td><td>(.*?)</td><td>.*?</span>(\w+)</td>"
                      r"<td class=\"num\">(.*?)</td></tr>", section)
    assert rows == [("0", "ZE", "round 1", "dave", "70.0%"), ("1", "TA", '<span class="muted">no round</span>', "bob",
                                                              "60.0%")]
    assert "rounds 1, 2" in section and "Predicted by lineage: <strong>dave</strong>" in section
    assert "Credit: <strong>making</strong>" in section  # a document from before credits were recorded
    run.lineage["credit"] = "cumulative"
    run.save(update_fields=["lineage"])
    section = as_user(users["auditor"]).get(page).content.decode().split('id="lineage"')[1]
    assert "Credit: <strong>cumulative</strong>" in section and "over every round up to the one that made it" in section
