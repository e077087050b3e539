"""The transfer scenarios of the seeds through pymongo: a two-account transfer committed through
``with_transaction``, its rollback, the isolation of uncommitted writes, and 200 concurrent
transfers among 10 accounts that must all complete without creating or losing money."""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

START = 10_000


class InsufficientFunds(Exception):
    """The source account cannot cover the amount."""


def transfer(client, db, source, target, amount):
    """Moves ``amount`` between two accounts in one transaction, retried by the driver."""

    def callback(session):
        account = db.accounts.find_one({"_id": source}, session=session)
        if account["balance"] < amount:
            raise InsufficientFunds(source)
        db.accounts.update_one({"_id": source}, {"$inc": {"balance": -amount}}, session=session)
        db.accounts.update_one({"_id": target}, {"$inc": {"balance": amount}}, session=session)

    with client.start_session() as session:
        session.with_transaction(callback)


def balances(db):
    return {a["_id"]: a["balance"] for a in db.accounts.find()}


@pytest.fixture
def accounts(db):
    db.drop_collection("accounts")
    db.accounts.insert_many([{"_id": "alice", "balance": 100}, {"_id": "bob", "balance": 20}])
    return db


def test_transfer_commits_both_updates(client, accounts):
    transfer(client, accounts, "alice", "bob", 30)
    assert balances(accounts) == {"alice": 70, "bob": 50}


def test_failed_transfer_rolls_back(client, accounts):
    with pytest.raises(InsufficientFunds):
        transfer(client, accounts, "bob", "alice", 500)
    assert balances(accounts) == {"alice": 100, "bob": 20}


def test_uncommitted_writes_are_invisible_then_abort_discards_them(client, accounts):
    with client.start_session() as session:
        session.start_transaction()
        accounts.accounts.update_one({"_id": "alice"}, {"$inc": {"balance": -60}}, session=session)
        accounts.accounts.update_one({"_id": "bob"}, {"$inc": {"balance": 60}}, session=session)
        assert accounts.accounts.find_one({"_id": "alice"}, session=session)["balance"] == 40
        assert balances(accounts) == {"alice": 100, "bob": 20}
        session.abort_transaction()
    assert balances(accounts) == {"alice": 100, "bob": 20}


def test_two_hundred_concurrent_transfers_among_ten_accounts(client, db):
    db.drop_collection("accounts")
    ids = [f"acct-{i}" for i in range(10)]
    db.accounts.insert_many([{"_id": i, "balance": START} for i in ids])
    rng = random.Random(20260101)
    transfers = []
    for _ in range(200):
        source = rng.randrange(10)
        target = (source + 1 + rng.randrange(9)) % 10
        transfers.append((ids[source], ids[target], 1 + rng.randrange(50)))
    expected = {i: START for i in ids}
    for source, target, amount in transfers:
        expected[source] -= amount
        expected[target] += amount

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(transfer, client, db, *t) for t in transfers]
        errors = [repr(f.exception()) for f in futures if f.exception() is not None]
    assert errors == []
    final = balances(db)
    assert sum(final.values()) == START * 10
    assert final == expected


def test_write_without_the_session_is_not_rolled_back(client, accounts):
    """The "forgot to pass the session" pitfall: a write made without the session commits on its
    own at once, and aborting the transaction does not undo it."""
    with client.start_session() as session:
        session.start_transaction()
        accounts.accounts.update_one({"_id": "alice"}, {"$inc": {"balance": -10}}, session=session)
        accounts.accounts.update_one({"_id": "bob"}, {"$inc": {"balance": 10}})  # no session
        assert balances(accounts) == {"alice": 100, "bob": 30}
        session.abort_transaction()
    assert balances(accounts) == {"alice": 100, "bob": 30}
