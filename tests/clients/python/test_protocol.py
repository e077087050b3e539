"""Protocol features drivers use: exhaust cursors, the streaming (awaitable hello) monitor,
the versioned API and strict command fields, through pymongo."""

import time

import pytest
from pymongo import CursorType, MongoClient, monitoring
from pymongo.errors import OperationFailure
from pymongo.server_api import ServerApi

from conftest import FOLIO_URI


def test_exhaust_cursor_returns_every_batch(db):
    coll = db.exhaust
    coll.insert_many([{"_id": i} for i in range(250)])
    cursor = coll.find({}, batch_size=10, cursor_type=CursorType.EXHAUST).sort("_id", 1)
    assert [d["_id"] for d in cursor] == list(range(250))


class HeartbeatListener(monitoring.ServerHeartbeatListener):
    def __init__(self):
        self.events = []

    def started(self, event):
        pass

    def succeeded(self, event):
        self.events.append(event)

    def failed(self, event):
        pass


def test_the_monitor_streams_awaitable_hellos():
    listener = HeartbeatListener()
    # A short heartbeat makes the server answer the streaming hello every 500 ms.
    c = MongoClient(FOLIO_URI, heartbeatFrequencyMS=500, event_listeners=[listener])
    try:
        c.admin.command("ping")
        deadline = time.monotonic() + 10
        while not any(e.awaited for e in listener.events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(e.awaited for e in listener.events), "no awaited heartbeat"
        # The connection pool keeps working while the monitor streams.
        assert c.admin.command("ping")["ok"] == 1.0
    finally:
        c.close()


def test_strict_api_refuses_commands_outside_version_1(db):
    c = MongoClient(FOLIO_URI, server_api=ServerApi("1", strict=True))
    try:
        coll = c[db.name].api
        coll.insert_one({"_id": 1, "k": "a"})
        assert coll.find_one({"_id": 1}) == {"_id": 1, "k": "a"}
        with pytest.raises(OperationFailure) as e:
            coll.distinct("k")
        assert e.value.code == 323
    finally:
        c.close()


def test_a_misspelt_option_is_refused(db):
    with pytest.raises(OperationFailure) as e:
        db.command({"find": "anything", "fliter": {"a": 1}})
    assert e.value.code == 40415
    assert "BSON field 'find.fliter' is an unknown field." in str(e.value)
