"""`audits.demo.run_demo`: rounds and prompts go in over real HTTP, a real worker attributes, the summary comes from the DB."""

from __future__ import annotations

import pytest
from audits.demo import DemoError, run_demo
from registry.models import Round


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_pipeline_through_the_http_api(worker, live_server, make_round):
    rounds = [make_round(federation="demo", number=n, seed=n) for n in (0, 1)]
    prompts = [{"prompt": f"Q{i}", "response": f" answer {i}", "chat_template": False} for i in range(3)]
    summary = run_demo(base_url=live_server.url, federation="demo", round_dirs=rounds, prompts=prompts, timeout_s=240)
    assert summary.rounds == [0, 1]
    assert summary.status_counts == {"done": 3}
    assert Round.objects.filter(federation__slug="demo").count() == 2
    assert [r["client_id"] for r in summary.shares] == ["alice", "bob", "carol"]
    assert sum(r["generations"] for r in summary.shares) == 9  # 3 generations x 3 clients
    assert sum(r["top1"] for r in summary.shares) == 3
    assert sum(r["mean_share"] for r in summary.shares) == pytest.approx(1.0)
    assert {p["predicted_client"] for p in summary.predictions} <= {"alice", "bob", "carol"}
    assert "mean share" in summary.table()


@pytest.mark.django_db(transaction=True)
def test_it_reports_an_unreachable_server(make_round):
    with pytest.raises(DemoError, match="server not reachable"):
        run_demo(base_url="http://127.0.0.1:9", federation="demo", round_dirs=[make_round(federation="demo")],
                 prompts=[{"prompt": "x"}])
