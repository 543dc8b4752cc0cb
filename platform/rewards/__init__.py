"""Rewards: settle a federation's period (screening + allocation) in one transaction, review flags, export payouts.

The ledger (`ledger/`, SQLAlchemy, schema ``ledger``) holds the money and the
verdicts; this app holds the Django-side bookkeeping around it (harm marks and
policies, reward plans, settlement and payout-export rows) and runs both in
one ``transaction.atomic()`` through `rewards.bridge.ledger_session`, which
rides Django's own psycopg connection. See `rewards.services` for the flow.
"""
