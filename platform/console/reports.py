"""Audit report content: gather a federation's period once, render it as HTML and as PDF.

`report_content` reads everything the report says into a `ReportContent`
(plain numbers, dates and strings; no querysets), so the two renderings
say exactly the same thing:

- HTML: a standalone document (inline CSS, charts as inline SVG) that opens
  from the artifacts storage with no server;
- PDF: A4 pages written with matplotlib's `PdfPages`: summary with charts,
  per-client table, top tokens per client, flags.

Sections: period summary; per-client shares (table and chart); generations
per day; share over time; the token texts each client is most often top-1
for; flagged clients from the ledger (flags raised in the period and every
flag still blocking a client).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime

from django.template.loader import render_to_string
from registry.models import Federation

from . import plots
from .ledger_reads import flags_for_period
from .periods import Period
from .selectors import (
    client_colours,
    client_period_rows,
    federation_daily_shares,
    generations_per_day,
    period_totals,
    top_tokens_per_client,
)

TOKENS_PER_CLIENT = 8


@dataclass
class ReportContent:
    federation_slug: str
    federation_name: str
    period: Period
    generated_at: datetime
    totals: dict
    clients: list[dict]  # client_id, display_name, status, generations, mean_share, top1, responsible, flags
    days: list[dict]  # day, total and one count per status
    share_series: dict[str, list[tuple[date, float]]]
    top_tokens: dict[str, list[dict]]  # client_id -> [{text, count, mean_share}]
    flags: list[dict]
    colours: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        """The headline numbers kept on the `AuditReport` row (JSON)."""
        leader = max(self.clients, key=lambda c: c["mean_share"], default=None)
        return {
            **{k: v for k, v in self.totals.items() if k != "mean_engine_ms"},
            "clients": len(self.clients),
            "flags": len(self.flags),
            "leader": leader["client_id"] if leader and leader["generations"] else None,
        }


def report_content(*, federation: Federation, period: Period, generated_at: datetime) -> ReportContent:
    flags = [_flag_row(f) for f in flags_for_period(federation_slug=federation.slug, since=period.since, until=period.until)]
    flag_counts: dict[str, int] = {}
    for f in flags:
        flag_counts[f["client_id"]] = flag_counts.get(f["client_id"], 0) + 1
    return ReportContent(
        federation_slug=federation.slug,
        federation_name=federation.name,
        period=period,
        generated_at=generated_at,
        totals=period_totals(federation=federation, period=period),
        clients=[_client_row(r, flag_counts) for r in client_period_rows(federation=federation, period=period)],
        days=generations_per_day(federation=federation, period=period),
        share_series=_series(federation_daily_shares(federation=federation, period=period)),
        top_tokens=top_tokens_per_client(federation=federation, period=period, per_client=TOKENS_PER_CLIENT),
        flags=flags,
        colours=client_colours(federation=federation),
    )


def _client_row(row: dict, flag_counts: dict[str, int]) -> dict:
    client = row["client"]
    return {
        "client_id": client.client_id,
        "display_name": client.display_name,
        "status": client.status,
        "generations": row["generations"],
        "mean_share": float(row["mean_share"]),
        "top1": row["top1"],
        "responsible": row["responsible"],
        "flags": flag_counts.get(client.client_id, 0),
    }


def _series(rows: list[dict]) -> dict[str, list[tuple[date, float]]]:
    series: dict[str, list[tuple[date, float]]] = {}
    for r in rows:
        series.setdefault(r["client__client_id"], []).append((r["day"], float(r["mean_share"])))
    return series


def _flag_row(flag) -> dict:
    return {
        "id": flag.id,
        "client_id": flag.client_id,
        "period": flag.period,
        "method": flag.method,
        "score": flag.score,
        "q_value": flag.q_value,
        "state": flag.state,
        "created_at": flag.created_at,
    }


def token_label(text: str) -> str:
    """A token's text with its whitespace visible: JSON string syntax (`" the"`, `"\\n"`)."""
    return json.dumps(text, ensure_ascii=False)


def render_html(content: ReportContent) -> str:
    shares = sorted(content.clients, key=lambda c: (-c["mean_share"], c["client_id"]))
    charts = {
        "shares": plots.to_svg(plots.chart(plots.draw_shares, shares, content.colours, height=plots.shares_height(shares))),
        "generations": plots.to_svg(plots.chart(plots.draw_generations, content.days, height=2.6)),
        "share_over_time": plots.to_svg(
            plots.chart(plots.draw_share_over_time, content.share_series, content.colours, content.period.days())
        ),
    }
    top_tokens = [
        {"client_id": c["client_id"], "colour": content.colours.get(c["client_id"]),
         "tokens": [{**t, "label": token_label(t["text"])} for t in content.top_tokens.get(c["client_id"], [])]}
        for c in content.clients
    ]
    return render_to_string(
        "console/report_document.html", {"r": content, "charts": charts, "top_tokens": top_tokens}
    )


def render_pdf(content: ReportContent) -> tuple[bytes, int]:
    """The PDF bytes and its page count."""
    doc = plots.PdfDocument(
        title=f"ProToken audit report: {content.federation_slug}, {content.period}",
        subject=f"Attribution audit of federation {content.federation_slug}",
    )
    _summary_page(doc, content)
    _clients_pages(doc, content)
    _tokens_pages(doc, content)
    _flags_pages(doc, content)
    return doc.close(), doc.pages


def summary_lines(content: ReportContent) -> list[str]:
    t = content.totals
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(t["by_status"].items())) or "none"
    return [
        f"Federation: {content.federation_name} ({content.federation_slug})",
        f"Period: {content.period} ({content.period.num_days} days, UTC)",
        f"Generated: {content.generated_at:%Y-%m-%d %H:%M} UTC",
        f"Generations: {t['generations']} ({statuses})",
        f"Attributed tokens: {t['tokens']}",
        f"Rounds used: {', '.join(map(str, t['rounds'])) or 'none'}",
        f"Method versions: {', '.join(t['method_versions']) or 'none'}",
        f"Mean engine time per generation: {t['mean_engine_ms'] if t['mean_engine_ms'] is not None else '-'} ms",
        f"Flags (raised in period or still blocking): {len(content.flags)}",
    ]


def _summary_page(doc: plots.PdfDocument, content: ReportContent) -> None:
    doc.add_text_page("ProToken audit report", summary_lines(content), charts=[
        (plots.draw_generations, (content.days,), {}, 2.7),
        (plots.draw_share_over_time, (content.share_series, content.colours, content.period.days()), {}, 2.9),
    ])
    shares = sorted(content.clients, key=lambda c: (-c["mean_share"], c["client_id"]))
    if len(shares) <= 24:  # more clients than that get the table only
        doc.add_text_page("Client shares", [], charts=[
            (plots.draw_shares, (shares, content.colours), {}, plots.shares_height(shares)),
        ])


def _clients_pages(doc: plots.PdfDocument, content: ReportContent) -> None:
    rows = [
        (c["client_id"], c["status"], str(c["generations"]), f"{c['mean_share']:.1%}", str(c["top1"]),
         str(c["responsible"]), str(c["flags"]))
        for c in sorted(content.clients, key=lambda c: (-c["mean_share"], c["client_id"]))
    ]
    columns = ("client", "status", "generations", "mean share", "top-1", "responsible", "flags")
    doc.add_table_pages("Per-client shares", columns, rows, empty="The federation has no clients.")


def _tokens_pages(doc: plots.PdfDocument, content: ReportContent) -> None:
    rows = [
        (client_id, token_label(t["text"]), str(t["count"]), f"{t['mean_share']:.1%}")
        for client_id in sorted(content.top_tokens)
        for t in content.top_tokens[client_id]
    ]
    doc.add_table_pages("Top-attributed tokens per client", ("client", "token", "times top-1", "mean top share"),
                        rows, empty="No tokens were attributed in this period.")


def _flags_pages(doc: plots.PdfDocument, content: ReportContent) -> None:
    rows = [
        (f["client_id"], f["method"], f"{f['score']:.3g}", "-" if f["q_value"] is None else f"{f['q_value']:.3g}",
         f["state"], f["period"], f"{f['created_at']:%Y-%m-%d}")
        for f in content.flags
    ]
    doc.add_table_pages("Flagged clients", ("client", "method", "score", "q-value", "state", "flag period", "raised"),
                        rows, empty="No client was flagged in this period, and no flag is blocking a client.")
