"""Both screening signals for a period, computed from what the platform stores.

Evidence: the period's attributed generations (latest run each) become
ledger `EvidenceRecord`s, harmful when an active `HarmMark` exists (policies
are applied first); `ledger.screen_evidence` tests each client's top-1 rate on
harmful generations against its baseline (the benign generations' top-1
rates, or FedAvg weights).

Updates: for each round registered in the period, the client slices are read
from the artifact store (every file's SHA-256 is checked against the
manifest again, pickles are refused) and streamed in column blocks into
per-client distance and cosine distance to the round's coordinate-wise
median; each client's update is measured against the previous round's global
model when that round is registered, else against the round's own global.
`ledger.screen_updates` turns them into robust z-scores and flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from registry.artifacts import local_folder
from registry.errors import InvalidInput
from registry.models import Federation, Round

import ledger
from ledger.inputs import RoundFolder, folder_statistics
from ledger.screening import RoundStatistics

from .periods import Period
from .selectors import fedavg_baseline, period_evidence, period_rounds


@dataclass(frozen=True)
class ScreeningOutcome:
    evidence: ledger.ScreeningResult
    updates: ledger.ScreeningResult
    generations: int
    harmful: int
    rounds: int

    @property
    def findings(self) -> list[ledger.Finding]:
        return self.evidence.findings + self.updates.findings

    def summary(self) -> dict:
        return {result.method: {"flagged": sorted(result.flagged), "notes": result.notes, "table": result.table}
                for result in (self.evidence, self.updates)}


def screen_period(*, federation: Federation, period: Period, rules) -> ScreeningOutcome:
    """Run both screens over the period (`rules` is a `SettlementRules`)."""
    records = period_evidence(federation=federation, period=period)
    rounds = period_rounds(federation=federation, period=period)
    baseline = fedavg_baseline(rounds=_evidence_rounds(federation, records)) \
        if rules.evidence_baseline == "fedavg" else None
    with _as_platform_error("evidence"):
        evidence = ledger.screen_evidence(records, baseline=baseline, config=ledger.EvidenceConfig(
            q=rules.evidence_q, min_count=rules.evidence_min_count))
    statistics = [round_update_statistics(r) for r in rounds] if rules.screen_updates else []
    with _as_platform_error("updates"):
        updates = ledger.screen_updates(statistics, ledger.UpdateConfig(
            q=rules.update_q, min_median_z=rules.update_min_median_z, min_clients=rules.update_min_clients))
    return ScreeningOutcome(evidence, updates, len(records), sum(r.harmful for r in records), len(statistics))


def _evidence_rounds(federation: Federation, records: list[ledger.EvidenceRecord]) -> list[Round]:
    return list(Round.objects.filter(federation=federation, number__in={r.round_id for r in records}))


def round_folder(round_: Round) -> RoundFolder:
    with _as_platform_error(f"round {round_.number}"):
        return RoundFolder(local_folder(prefix=round_.artifact_path, names=round_.files))


def round_update_statistics(round_: Round) -> RoundStatistics:
    """Distances of each client's update in `round_` to the round's robust centre."""
    folder = round_folder(round_)
    previous = Round.objects.filter(federation_id=round_.federation_id, number=round_.number - 1).first()
    reference = round_folder(previous).global_file if previous is not None else None
    with _as_platform_error(f"round {round_.number}"):
        return folder_statistics(folder, reference)


@contextmanager
def _as_platform_error(where: str) -> Iterator[None]:
    """A ledger refusal while screening becomes a 422 that says which input was at fault."""
    try:
        yield
    except ledger.LedgerError as exc:
        raise InvalidInput("screening_input", f"screening {where}: {exc}") from exc
