"""Verify a federation's ledger from its stored rows alone: chain, hashes, balance and exports.

Checks, per federation:
- the records (transactions and flag events) have seq 1..N without gaps, each
  links to its predecessor's hash, and each stored hash equals the hash
  recomputed from the stored columns, entries, accounts and flag content
  (`ledger.chain`); the `federations` head names record N and its hash;
- every transaction has entries, balances per currency, books only accounts
  of its own federation in the account's currency, and a reversal is the
  exact negation of the transaction it names;
- every payout export: its items match the lines hashed into the payout
  transaction, and the files re-render to the recorded SHA-256s.

A row edited behind the triggers' back (e.g. by a superuser with
``session_replication_role = replica``) therefore fails at least one check.
Truncating the newest records *and* rewinding the head cannot be seen from
inside the database; anchor the head externally (the CLI prints it, and
every export file carries the hash it was built on).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import canonical, chain
from ledger.errors import TamperDetected
from ledger.exports import render, stored_lines
from ledger.models import Account, Entry, Federation, Flag, FlagEvent, PayoutExport, Transaction


@dataclass
class VerifyReport:
    federations: list[str] = field(default_factory=list)
    records: int = 0
    entries: int = 0
    exports: int = 0
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)  # federation -> (seq, hash)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session, federation: str | None = None,
           progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Check one federation (or all); the report lists every problem found."""
    report = VerifyReport()
    names = _federation_names(session) if federation is None else [canonical.federation_id(federation)]
    for name in names:
        if progress:
            progress(name)
        report.federations.append(name)
        _verify_federation(session, name, report)
    return report


def _federation_names(session: Session) -> list[str]:
    names = set(session.execute(select(Federation.name)).scalars())
    names |= set(session.execute(select(Transaction.federation).distinct()).scalars())
    names |= set(session.execute(select(FlagEvent.federation).distinct()).scalars())
    return sorted(names)


def _verify_federation(session: Session, name: str, report: VerifyReport) -> None:
    problems = report.problems
    entries = _entries_by_transaction(session, name, problems)
    records = [(t.seq, "transaction", t) for t in session.execute(
        select(Transaction).where(Transaction.federation == name)).scalars()]
    records += [(e.seq, "flag event", e) for e in session.execute(
        select(FlagEvent).where(FlagEvent.federation == name)).scalars()]
    records.sort(key=lambda r: (r[0], r[1]))
    flags = {f.id: f for f in session.execute(select(Flag).where(Flag.federation == name)).scalars()}
    last_hash = _check_chain(name, records, entries, flags, problems)
    _check_head(session, name, len(records), last_hash, report)
    transactions = {r[2].id: r[2] for r in records if r[1] == "transaction"}
    for txn in transactions.values():
        _check_transaction(name, txn, entries, transactions, problems)
    report.records += len(records)
    report.entries += sum(len(v) for v in entries.values())
    payouts = {t.id for t in transactions.values() if t.kind == "payout"}
    report.exports += _check_exports(session, name, payouts, problems)


def _entries_by_transaction(session: Session, name: str, problems: list[str]) -> dict[int, list]:
    rows = session.execute(
        select(Entry.id, Entry.transaction_id, Entry.account_id, Account.kind, Account.client_id, Entry.currency,
               Entry.amount, Account.currency, Account.federation)
        .join(Transaction, Entry.transaction_id == Transaction.id)
        .join(Account, Entry.account_id == Account.id, isouter=True)
        .where(Transaction.federation == name).order_by(Entry.id)
    ).all()
    grouped: dict[int, list] = defaultdict(list)
    for entry_id, txn_id, account_id, kind, client, currency, amount, account_currency, account_fed in rows:
        if kind is None:
            problems.append(f"{name}: entry {entry_id} books the missing account {account_id}")
        elif account_fed != name or account_currency != currency:
            problems.append(f"{name}: entry {entry_id} books account {account_id} of {account_fed!r} in "
                            f"{account_currency}, but is in {name!r} in {currency}")
        grouped[txn_id].append(chain.EntryRow(entry_id, account_id, kind, client, currency, amount))
    return grouped


def _check_chain(name: str, records: list, entries: dict, flags: dict, problems: list[str]) -> str:
    prev = canonical.GENESIS_HASH
    for expected_seq, (seq, what, row) in enumerate(records, start=1):
        where = f"{name} seq {seq} ({what} {row.id})"
        if seq != expected_seq:
            problems.append(f"{where}: expected seq {expected_seq}; the chain has a gap or a duplicate")
        if row.prev_hash != prev:
            problems.append(f"{where}: prev_hash does not link to the previous record's hash")
        computed = canonical.chain_hash(row.prev_hash, _body(row, what, entries, flags, problems, where))
        if computed != row.hash:
            problems.append(f"{where}: stored hash {row.hash[:12]}... != recomputed {computed[:12]}...; "
                            "the record or its entries/accounts/flag were changed")
        prev = row.hash
    return prev


def _body(row, what: str, entries: dict, flags: dict, problems: list[str], where: str) -> dict:
    if what == "transaction":
        fields = {name: getattr(row, name) for name in chain.TRANSACTION_FIELDS if name != "metadata"}
        return chain.transaction_body({**fields, "metadata": row.meta, "created_at": row.created_at},
                                      entries.get(row.id, []))
    flag = flags.get(row.flag_id)
    if flag is None:
        problems.append(f"{where}: its flag {row.flag_id} is missing or belongs to another federation")
    fields = {name: getattr(row, name) for name in chain.FLAG_EVENT_FIELDS}
    return chain.flag_event_body({**fields, "created_at": row.created_at},
                                 chain.flag_body(flag) if flag is not None else None)


def _check_head(session: Session, name: str, count: int, last_hash: str, report: VerifyReport) -> None:
    head = session.get(Federation, name)
    if head is None:
        if count:
            report.problems.append(f"{name}: {count} records but no chain head row")
        return
    report.heads[name] = (head.head_seq, head.head_hash)
    if (head.head_seq, head.head_hash) != (count, last_hash):
        report.problems.append(f"{name}: chain head says seq {head.head_seq} but the records end at seq {count} "
                               "with another hash")


def _check_transaction(name: str, txn: Transaction, entries: dict, transactions: dict, problems: list[str]) -> None:
    where = f"{name} seq {txn.seq}"
    rows = entries.get(txn.id, [])
    if not rows:
        problems.append(f"{where}: transaction {txn.id} has no entries")
    totals: Counter = Counter()
    for row in rows:
        totals[row.currency] += row.amount
    if any(totals.values()):
        problems.append(f"{where}: entries do not balance: {dict(totals)}")
    if txn.kind == "reversal":
        original = transactions.get(txn.reverses_id)
        if original is None:
            problems.append(f"{where}: reverses transaction {txn.reverses_id}, which is not in {name!r}")
        elif _legs(rows) != Counter({k: -v for k, v in _legs(entries.get(original.id, [])).items()}):
            problems.append(f"{where}: is not the exact negation of seq {original.seq}")


def _legs(rows: list[chain.EntryRow]) -> Counter:
    counter: Counter = Counter()
    for row in rows:
        counter[(row.kind, row.client_id, row.currency)] += row.amount
    return counter


def _check_exports(session: Session, name: str, payouts: set[int], problems: list[str]) -> int:
    exports = list(session.execute(select(PayoutExport).where(PayoutExport.federation == name)).scalars())
    exported = Counter(export.transaction_id for export in exports)
    if set(exported) != payouts or any(n > 1 for n in exported.values()):
        problems.append(f"{name}: payout transactions {sorted(payouts)} and export rows "
                        f"{sorted(exported.elements())} do not correspond one to one")
    for export in exports:
        try:
            _check_export(session, export, problems)
        except TamperDetected as exc:
            problems.append(str(exc))
    return len(exports)


def _check_export(session: Session, export: PayoutExport, problems: list[str]) -> None:
    where = f"{export.federation} export {export.period} {export.currency}"
    payout = session.get(Transaction, export.transaction_id)
    if payout is None or payout.kind != "payout" or payout.federation != export.federation:
        problems.append(f"{where}: its payout transaction {export.transaction_id} is missing or not a payout")
        return
    lines = stored_lines(session, export)
    hashed = [[line.client_id, line.amount, list(line.entry_ids)] for line in lines]
    if hashed != payout.meta.get("lines") or payout.meta.get("period") != export.period:
        problems.append(f"{where}: exported entries differ from the lines hashed into payout seq {payout.seq}")
    files = render(export.federation, export.period, export.currency, payout.seq, payout.prev_hash, lines,
                   replayed=True)
    recorded = {(export.csv_sha256, export.json_sha256),
                (payout.meta.get("csv_sha256"), payout.meta.get("json_sha256"))}
    if recorded != {(files.csv_sha256, files.json_sha256)}:
        problems.append(f"{where}: the files no longer render to the recorded SHA-256s")
