"""TTL indexes through pymongo: with ttlMonitorSleepSecs=1 (set at runtime), expired documents
are removed within seconds and unexpired ones are kept."""

import datetime
import time


def test_ttl_monitor_removes_expired_documents_only(client, db):
    admin = client.admin
    was = admin.command({"setParameter": 1, "ttlMonitorSleepSecs": 1})["was"]
    try:
        coll = db.sessions
        now = datetime.datetime.now(datetime.timezone.utc)
        coll.create_index("lastSeen", expireAfterSeconds=60)
        coll.insert_many(
            [
                {"_id": "old", "lastSeen": now - datetime.timedelta(hours=1)},
                {"_id": "old-array", "lastSeen": [now + datetime.timedelta(hours=1), now - datetime.timedelta(hours=1)]},
                {"_id": "fresh", "lastSeen": now},
                {"_id": "no-date", "lastSeen": "yesterday"},
                {"_id": "missing"},
            ]
        )
        deadline = time.monotonic() + 15
        while coll.count_documents({"_id": {"$in": ["old", "old-array"]}}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(d["_id"] for d in coll.find()) == ["fresh", "missing", "no-date"]
        ttl = admin.command("serverStatus")["metrics"]["ttl"]
        assert ttl["deletedDocuments"] >= 2
        assert ttl["passes"] >= 1
    finally:
        admin.command({"setParameter": 1, "ttlMonitorSleepSecs": was})
