"""Console pages: thin views over `access`, `forms`, `selectors` and `services`.

Every page needs a signed-in user (`console_page`), and every page inside a
federation starts with `federation_access`, which answers 404 for an unknown
federation and 403 for one the user is not a member of. A `ConsoleError`
raised anywhere below becomes an error page with its status and message;
objects are always fetched through the federation, so another federation's
ids are 404 here.
"""

from __future__ import annotations

import functools
import json

from audits.models import AttributionRun, Generation
from audits.selectors import client_share_summary, generation_list
from django.contrib.auth.decorators import login_required
from django.core.paginator import InvalidPage, Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_http_methods
from registry.errors import PlatformError
from registry.models import Client, Federation

from . import selectors
from .access import ConsoleError, ObjectNotFound, federation_access, visible_federations
from .forms import GenerationFilterForm, PeriodForm, ReportForm
from .ledger_reads import federation_flags, payout_exports
from .models import BUILD_REPORTS, VIEW_GENERATIONS, VIEW_PAYOUTS, AuditReport
from .services import report_build, report_file_bytes

PAGE_SIZE = 25
# The stored report is data, not part of the console: it may style itself and show its inline SVG, nothing else.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def console_page(view):
    """Signed-in users only; a `ConsoleError` (or a registry `PlatformError`) becomes an error page."""

    @login_required
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ConsoleError as exc:
            return _error_page(request, exc.status, exc.message)
        except PlatformError as exc:
            return _error_page(request, exc.status, exc.message)

    return wrapped


def _error_page(request: HttpRequest, status: int, message: str) -> HttpResponse:
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Integrity check failed"}
    context = {"status": status, "title": titles.get(status, "Error"), "message": message}
    return render(request, "console/error.html", context, status=status)


@console_page
def overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    cards = [selectors.federation_card(federation=a.federation, now=now) | {"access": a} for a in visible_federations(request.user)]
    return render(request, "console/overview.html", {"cards": cards})


@console_page
def federation_detail(request: HttpRequest, slug: str) -> HttpResponse:
    access = federation_access(request.user, slug)
    federation = access.federation
    form = PeriodForm(request.GET or None)
    period = form.cleaned_data["period"] if form.is_valid() else form.default
    context = {
        "access": access,
        "federation": federation,
        "form": form,
        "period": period,
        "clients": selectors.client_period_rows(federation=federation, period=period) if not form.errors else [],
        "rounds": selectors.round_rows(federation=federation),
        "status_counts": selectors.status_counts(federation=federation),
        "colours": selectors.client_colours(federation=federation),
        "reports": AuditReport.objects.filter(federation=federation)[:5],
        "exports": payout_exports(federation_slug=slug) if access.can(VIEW_PAYOUTS) else None,
    }
    return render(request, "console/federation.html", context, status=400 if form.errors else 200)


@console_page
def generation_list_page(request: HttpRequest, slug: str) -> HttpResponse:
    access = federation_access(request.user, slug)
    access.require(VIEW_GENERATIONS)
    form = GenerationFilterForm(request.GET or None, federation=access.federation)
    if request.GET and not form.is_valid():
        context = {"access": access, "federation": access.federation, "form": form, "page": None}
        return render(request, "console/generations.html", context, status=400)
    filters = form.selector_filters() if request.GET else {}
    page = _page(_generations(access.federation, filters), request.GET.get("page", "1"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"access": access, "federation": access.federation, "form": form, "page": page,
               "query": query.urlencode(), "colours": selectors.client_colours(federation=access.federation)}
    return render(request, "console/generations.html", context)


def _generations(federation: Federation, filters: dict):
    latest_first = AttributionRun.objects.select_related("predicted_client").order_by("-created_at", "-id")
    qs = generation_list(federation_ids=[federation.pk], **filters)
    if filters.get("predicted_client"):
        qs = qs.distinct()  # the filter joins runs: one row per matching run otherwise
    return qs.prefetch_related(Prefetch("runs", queryset=latest_first))


def _page(queryset, number: str):
    paginator = Paginator(queryset, PAGE_SIZE)
    if not number.isdigit():
        raise ConsoleError(f"page must be a positive whole number, got {number!r}")
    try:
        return paginator.page(int(number))
    except InvalidPage:
        raise ObjectNotFound(f"there is no page {number}; the list has {paginator.num_pages} page(s)") from None


@console_page
def generation_detail(request: HttpRequest, slug: str, generation_id: int) -> HttpResponse:
    access = federation_access(request.user, slug)
    access.require(VIEW_GENERATIONS)
    generation = (
        Generation.objects.select_related("round").filter(federation=access.federation, pk=generation_id).first()
    )
    if generation is None:
        raise ObjectNotFound(f"federation {slug!r} has no generation {generation_id}")
    runs = selectors.generation_runs(generation=generation)
    run = _chosen_run(runs, request.GET.get("run"))
    colours = selectors.client_colours(federation=access.federation)
    context = {"access": access, "federation": access.federation, "generation": generation, "runs": runs, "run": run,
               "colours": colours}
    if run is not None:
        context |= _run_context(run, colours)
    return render(request, "console/generation.html", context)


def _chosen_run(runs: list[AttributionRun], raw: str | None) -> AttributionRun | None:
    if raw is None:
        return runs[0] if runs else None
    chosen = [r for r in runs if str(r.pk) == raw]
    if not chosen:
        raise ObjectNotFound(f"this generation has no attribution run {raw!r}")
    return chosen[0]


def _run_context(run: AttributionRun, colours: dict[str, str]) -> dict:
    tokens = selectors.generation_tokens(run=run)
    k = max(len(run.client_ids), 1)
    for t in tokens:
        # Stronger tint for more decisive tokens: 1/K (a tie) is faint, 1.0 is full.
        strength = (t["top_share"] - 1 / k) / (1 - 1 / k) if k > 1 else 1.0
        t["alpha"] = round(0.18 + 0.62 * max(0.0, min(1.0, strength)), 3)
        t["colour"] = colours.get(t["top_client"], "#888888")
    inspector = {"clients": run.client_ids, "colours": {c: colours.get(c, "#888888") for c in run.client_ids},
                 "tokens": [{"text": t["text"], "top": t["top_client"], "shares": t["shares"]} for t in tokens]}
    client_rows = selectors.run_client_rows(run=run)
    return {
        "tokens": tokens,
        "inspector": inspector,
        "client_rows": client_rows,
        "responsible": [r.client.client_id for r in client_rows if r.in_responsible_set],
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "timings": run.provenance.get("timings") or {},
        "lineage": _lineage_context(run.lineage, [t["text"] for t in tokens], colours),
    }


def _lineage_context(document: dict | None, texts: list[str], colours: dict[str, str]) -> dict | None:
    """Rows of the round-lineage table: per token its making round and its top client there."""
    if not document:
        return None
    ids, shares = document["client_ids"], document["token_shares"]
    tokens = [{"position": t, "text": texts[t] if t < len(texts) else "", "made": made,
               "client": document["token_clients"][t], "colour": colours.get(document["token_clients"][t], "#888888"),
               "share": shares[t][ids.index(document["token_clients"][t])]}
              for t, made in enumerate(document["making_round"])]
    order = sorted(range(len(ids)), key=lambda k: -document["sequence_shares"][k])
    return {"tokens": tokens, "rounds": document["rounds"], "predicted": document["predicted_client"],
            "credit": document.get("credit", "making"),
            "clients": [{"client_id": ids[k], "share": document["sequence_shares"][k],
                         "colour": colours.get(ids[k], "#888888")} for k in order]}


@console_page
def client_detail(request: HttpRequest, slug: str, client_id: str) -> HttpResponse:
    access = federation_access(request.user, slug)
    client = Client.objects.filter(federation=access.federation, client_id=client_id).first()
    if client is None:
        raise ObjectNotFound(f"federation {slug!r} has no client {client_id!r}")
    form = PeriodForm(request.GET or None)
    period = form.cleaned_data["period"] if form.is_valid() else form.default
    context = {"access": access, "federation": access.federation, "client": client, "form": form, "period": period,
               "colour": selectors.client_colours(federation=access.federation).get(client.client_id),
               "flags": federation_flags(federation_slug=slug, client_id=client.client_id)}
    if not form.errors:
        context |= _client_period_context(client, period, access.can(VIEW_GENERATIONS))
    return render(request, "console/client.html", context, status=400 if form.errors else 200)


def _client_period_context(client: Client, period, show_tokens: bool) -> dict:
    from . import plots

    daily = selectors.client_daily_shares(client=client, period=period)
    series = {client.client_id: [(d["day"], float(d["mean_share"])) for d in daily]}
    colours = selectors.client_colours(federation=client.federation)
    chart = plots.to_svg(plots.chart(plots.draw_share_over_time, series, colours, period.days(), height=2.4,
                                     title=f"Mean share per day of {client.client_id}"))
    return {
        "summary": client_share_summary(client=client, since=period.since, until=period.until),
        "daily": daily,
        "chart": chart,
        "top_tokens": selectors.client_top_token_rows(client=client) if show_tokens else None,
    }


@console_page
@require_http_methods(["GET", "POST"])
def report_list(request: HttpRequest, slug: str) -> HttpResponse:
    access = federation_access(request.user, slug)
    form = ReportForm(request.POST or None)
    if request.method == "POST":
        access.require(BUILD_REPORTS)
        if form.is_valid():
            report = report_build(federation=access.federation, period=form.cleaned_data["period"],
                                  trigger=AuditReport.Trigger.CONSOLE, user=request.user)
            return redirect("console:report", slug=slug, report_id=report.pk)
    context = {"access": access, "federation": access.federation, "form": form,
               "reports": AuditReport.objects.filter(federation=access.federation).select_related("created_by")}
    return render(request, "console/reports.html", context, status=400 if form.errors else 200)


def _report(access, report_id: int) -> AuditReport:
    report = AuditReport.objects.filter(federation=access.federation, pk=report_id).select_related("federation").first()
    if report is None:
        raise ObjectNotFound(f"federation {access.federation.slug!r} has no report {report_id}")
    return report


@console_page
def report_detail(request: HttpRequest, slug: str, report_id: int) -> HttpResponse:
    access = federation_access(request.user, slug)
    report = _report(access, report_id)
    return render(request, "console/report.html", {"access": access, "federation": access.federation, "report": report})


@console_page
@xframe_options_sameorigin
def report_html(request: HttpRequest, slug: str, report_id: int) -> HttpResponse:
    report = _report(federation_access(request.user, slug), report_id)
    response = HttpResponse(report_file_bytes(report=report, kind="html"), content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = REPORT_CSP
    return response


@console_page
def report_pdf(request: HttpRequest, slug: str, report_id: int) -> HttpResponse:
    report = _report(federation_access(request.user, slug), report_id)
    response = HttpResponse(report_file_bytes(report=report, kind="pdf"), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{report.pdf_filename}"'
    response["X-Content-SHA256"] = report.pdf_sha256
    return response
