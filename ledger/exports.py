"""Payout exports: CSV and JSON files of what to pay, hashed into the ledger, never paid twice.

A payout run is named by its period and currency. It pays every payable
entry that no earlier run exported (the period's allocation and anything
carried: released holds, corrections, earlier negative remainders), netted
per client. Clients with an open or confirmed flag are skipped and clients
whose net is not positive are carried to a later run. For the rest it posts
one ``payout`` transaction (payable -> paid_out) and inserts one
`ExportItem` per exported entry; `export_items.entry_id` is the primary
key, so the database itself refuses to export an entry twice.

The files are a pure function of stored rows (no wall-clock time, sorted
lines, fixed formatting), and their SHA-256s are recorded both in the export
row and in the payout transaction's hashed metadata. Exporting the same
period again re-renders the stored run and returns byte-identical files,
after checking that their hashes still match.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ledger import canonical, chain, journal
from ledger.errors import InvalidInput, NothingToExport, TamperDetected
from ledger.flags import blocking_clients
from ledger.journal import Leg
from ledger.models import Account, Entry, ExportItem, PayoutExport, Transaction

FORMAT = "protoken-payout/1"
CSV_HEADER = ("client_id", "payout_reference", "amount", "currency", "source_transactions")


@dataclass(frozen=True)
class PayoutLine:
    client_id: str
    payout_reference: str
    amount: int  # minor units
    source_seqs: tuple[int, ...]  # seq of every transaction the amount comes from
    entry_ids: tuple[int, ...]


@dataclass(frozen=True)
class PayoutFiles:
    federation: str
    period: str
    currency: str
    transaction_seq: int
    lines: tuple[PayoutLine, ...]
    csv: bytes
    json: bytes
    replayed: bool

    @property
    def csv_sha256(self) -> str:
        return canonical.sha256_hex(self.csv)

    @property
    def json_sha256(self) -> str:
        return canonical.sha256_hex(self.json)

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``payout-<federation>-<period>-<currency>.{csv,json}`` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"payout-{self.federation}-{self.period}-{self.currency}".replace(":", "_")
        paths = (directory / f"{stem}.csv", directory / f"{stem}.json")
        paths[0].write_bytes(self.csv)
        paths[1].write_bytes(self.json)
        return paths


def payout_reference(federation: str, period: str, currency: str, client_id: str) -> str:
    digest = canonical.sha256_hex(f"{federation}|{period}|{currency}|{client_id}")
    return f"PT-{digest[:20].upper()}"


def export_payouts(session: Session, *, federation: str, period: str, currency: str) -> PayoutFiles:
    """Export (or re-export, identically) the payout run of `period` in `currency`."""
    canonical.federation_id(federation)
    canonical.period_label(period)
    canonical.currency_code(currency)
    head = chain.lock_head(session, federation)
    existing = session.execute(select(PayoutExport).where(
        PayoutExport.federation == federation, PayoutExport.period == period,
        PayoutExport.currency == currency)).scalar_one_or_none()
    if existing is not None:
        return replay_export(session, existing)
    lines = _payable_lines(session, federation, period, currency)
    files = render(federation, period, currency, head.head_seq + 1, head.head_hash, lines, replayed=False)
    receipt = journal.append_transaction(
        session, head, kind="payout", legs=_payout_legs(lines, currency),
        idempotency_key=f"payout:{period}:{currency}",
        request_hash=canonical.request_hash({"period": period, "currency": currency,
                                             "entries": [list(line.entry_ids) for line in lines]}),
        description=f"payout run {period} {currency}", metadata=_payout_metadata(files),
    )
    export_id = session.execute(insert(PayoutExport).returning(PayoutExport.id), [{
        "federation": federation, "period": period, "currency": currency, "transaction_id": receipt.id,
        "csv_sha256": files.csv_sha256, "json_sha256": files.json_sha256, "created_at": receipt.created_at,
    }]).scalar_one()
    session.execute(insert(ExportItem), [{"entry_id": e, "export_id": export_id, "client_id": line.client_id}
                                         for line in lines for e in line.entry_ids])
    return files


def _payable_lines(session: Session, federation: str, period: str, currency: str) -> list[PayoutLine]:
    exported = select(ExportItem.entry_id).where(ExportItem.entry_id == Entry.id).exists()
    rows = session.execute(
        select(Account.client_id, Entry.id, Entry.amount, Transaction.seq)
        .join(Account, Entry.account_id == Account.id).join(Transaction, Entry.transaction_id == Transaction.id)
        .where(Account.federation == federation, Account.kind == "payable", Account.currency == currency,
               Transaction.kind != "payout", ~exported)
    ).all()
    blocked = blocking_clients(session, federation)
    lines = _group(rows, federation, period, currency)
    lines = [line for line in lines if line.client_id not in blocked and line.amount > 0]
    if not lines:
        raise NothingToExport(f"nothing to pay in {currency} for {federation!r}: no client has a positive, "
                              "unexported and unblocked payable balance")
    return lines


def _group(rows, federation: str, period: str, currency: str) -> list[PayoutLine]:
    by_client: dict[str, list] = defaultdict(list)
    for client, entry_id, amount, seq in rows:
        by_client[client].append((entry_id, amount, seq))
    return [
        PayoutLine(client, payout_reference(federation, period, currency, client), sum(a for _, a, _ in items),
                   tuple(sorted({s for _, _, s in items})), tuple(sorted(e for e, _, _ in items)))
        for client, items in sorted(by_client.items())
    ]


def _payout_legs(lines: list[PayoutLine], currency: str) -> list[Leg]:
    legs = []
    for line in lines:
        legs += [Leg("payable", line.client_id, -line.amount, currency),
                 Leg("paid_out", line.client_id, line.amount, currency)]
    return legs


def _payout_metadata(files: PayoutFiles) -> dict:
    return {"period": files.period, "currency": files.currency, "csv_sha256": files.csv_sha256,
            "json_sha256": files.json_sha256,
            "lines": [[line.client_id, line.amount, list(line.entry_ids)] for line in files.lines]}


def render(federation: str, period: str, currency: str, seq: int, prev_hash: str, lines: list[PayoutLine],
           *, replayed: bool) -> PayoutFiles:
    """The two files of a payout run: deterministic bytes from the lines alone."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for line in lines:
        writer.writerow([line.client_id, line.payout_reference, line.amount, currency,
                         ";".join(str(s) for s in line.source_seqs)])
    document = {
        "format": FORMAT, "federation": federation, "period": period, "currency": currency,
        "payout_transaction_seq": seq, "ledger_prev_hash": prev_hash, "total": sum(x.amount for x in lines),
        "lines": [{"client_id": x.client_id, "payout_reference": x.payout_reference, "amount": x.amount,
                   "currency": currency, "source_transactions": list(x.source_seqs)} for x in lines],
    }
    as_json = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return PayoutFiles(federation, period, currency, seq, tuple(lines), text.getvalue().encode("utf-8"),
                       as_json.encode("utf-8"), replayed)


def stored_lines(session: Session, export: PayoutExport) -> list[PayoutLine]:
    rows = session.execute(
        select(ExportItem.client_id, Entry.id, Entry.amount, Transaction.seq)
        .join(Entry, ExportItem.entry_id == Entry.id).join(Transaction, Entry.transaction_id == Transaction.id)
        .where(ExportItem.export_id == export.id)
    ).all()
    return _group(rows, export.federation, export.period, export.currency)


def replay_export(session: Session, export: PayoutExport) -> PayoutFiles:
    """Re-render a stored run; TamperDetected if the bytes no longer hash to what was recorded."""
    payout = session.get(Transaction, export.transaction_id)
    if payout is None:
        raise TamperDetected(f"export {export.id} points at a missing transaction {export.transaction_id}")
    files = render(export.federation, export.period, export.currency, payout.seq, payout.prev_hash,
                   stored_lines(session, export), replayed=True)
    if (files.csv_sha256, files.json_sha256) != (export.csv_sha256, export.json_sha256):
        raise TamperDetected(f"payout run {export.period} {export.currency} of {export.federation!r} no longer "
                             "renders to its recorded SHA-256; run `python -m ledger verify`")
    return files


def list_exports(session: Session, federation: str) -> list[PayoutExport]:
    if not isinstance(federation, str):
        raise InvalidInput("federation must be a string")
    return list(session.execute(select(PayoutExport).where(PayoutExport.federation == federation)
                                .order_by(PayoutExport.id)).scalars())
