"""Change streams through pymongo: a transaction's writes as events of one transaction, resuming
after a server restart from a saved token, and ChangeStreamHistoryLost once the retention has
trimmed the token's history. The restart test starts its own server (FOLIO_BIN) on a data
directory of its own."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

ROOT = Path(__file__).resolve().parents[3]
FOLIO_BIN = os.environ.get("FOLIO_BIN", str(ROOT / "target" / "release" / "folio"))


def next_events(stream, n, timeout=10.0):
    """Reads n events from a change stream, waiting at most `timeout` seconds."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        event = stream.try_next()
        if event is not None:
            events.append(event)
    assert len(events) == n, f"expected {n} events, got {events}"
    return events


def test_watch_sees_a_transaction_as_events_with_one_txn_number(client, db):
    coll = db.accounts
    coll.insert_one({"_id": "a", "balance": 100})
    coll.insert_one({"_id": "b", "balance": 0})
    with coll.watch(max_await_time_ms=500) as stream:
        with client.start_session() as session:
            lsid = session.session_id
            with session.start_transaction():
                coll.update_one({"_id": "a"}, {"$inc": {"balance": -30}}, session=session)
                coll.update_one({"_id": "b"}, {"$inc": {"balance": 30}}, session=session)
                coll.insert_one({"_id": "log1", "amount": 30}, session=session)
        events = next_events(stream, 3)
    assert [e["operationType"] for e in events] == ["update", "update", "insert"]
    assert events[0]["updateDescription"]["updatedFields"] == {"balance": 70}
    assert len({e["txnNumber"] for e in events}) == 1
    assert len({e["clusterTime"] for e in events}) == 1
    assert all(e["lsid"]["id"] == lsid["id"] for e in events)
    tokens = [e["_id"]["_data"] for e in events]
    assert tokens == sorted(tokens)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A folio server of this test's own, on a data directory that outlives restarts."""

    def __init__(self, dbpath):
        self.dbpath = dbpath
        self.port = free_port()
        self.proc = None

    def start(self):
        assert Path(FOLIO_BIN).exists(), f"no folio binary at {FOLIO_BIN} (set FOLIO_BIN)"
        log = self.dbpath.parent / "folio.log"
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [FOLIO_BIN, "serve", "--port", str(self.port), "--dbpath", str(self.dbpath)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "folio listening on" not in log.read_text():
            assert self.proc.poll() is None, f"folio exited before listening: {log.read_text()}"
            assert time.monotonic() < deadline, f"folio did not start: {log.read_text()}"
            time.sleep(0.05)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def client(self):
        return MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?replicaSet=rs0", serverSelectionTimeoutMS=15000
        )


def test_resume_after_restart_then_history_lost(tmp_path):
    server = Server(tmp_path / "data")
    server.start()
    try:
        client = server.client()
        coll = client.app.orders
        coll.insert_one({"_id": 0})
        with coll.watch(max_await_time_ms=500) as stream:
            coll.insert_one({"_id": 1})
            (first,) = next_events(stream, 1)
            token = stream.resume_token
        assert first["documentKey"] == {"_id": 1}
        coll.insert_one({"_id": 2})
        coll.update_one({"_id": 2}, {"$set": {"shipped": True}})
        client.close()

        # Killed without a clean shutdown: the log is as durable as the data.
        server.kill()
        server.start()
        client = server.client()
        coll = client.app.orders
        with coll.watch(resume_after=token, max_await_time_ms=500) as stream:
            events = next_events(stream, 2)
        assert [e["operationType"] for e in events] == ["insert", "update"]
        assert events[0]["fullDocument"] == {"_id": 2}

        # A tiny retention: the background trimming soon drops the token's history.
        client.admin.command({"replSetResizeOplog": 1, "size": 0.0001})
        for i in range(100):
            coll.insert_one({"_id": 100 + i, "pad": "x" * 100})
        deadline = time.monotonic() + 10
        while True:
            try:
                coll.watch(resume_after=token).close()
            except OperationFailure as e:
                assert e.code == 286, e
                assert e.details["codeName"] == "ChangeStreamHistoryLost"
                break
            assert time.monotonic() < deadline, "the history was never trimmed"
            time.sleep(0.2)
        client.close()
    finally:
        server.kill()
