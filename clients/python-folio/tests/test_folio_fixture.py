"""The plugin as a suite uses it: a transaction through the `folio` fixture, and the server's
lifecycle."""

import os
import subprocess
import sys
import time

import pytest
from pymongo import MongoClient

from pytest_folio import FolioServer


def transfer(client, session, amount):
    accounts = client.bank.accounts
    accounts.update_one({"_id": "alice"}, {"$inc": {"balance": -amount}}, session=session)
    if amount > 100:
        raise ValueError("insufficient funds")
    accounts.update_one({"_id": "bob"}, {"$inc": {"balance": amount}}, session=session)


def test_a_transaction_through_the_folio_fixture(folio):
    assert isinstance(folio, MongoClient)
    folio.bank.accounts.drop()
    folio.bank.accounts.insert_many([{"_id": "alice", "balance": 100}, {"_id": "bob", "balance": 0}])
    with folio.start_session() as session:
        session.with_transaction(lambda s: transfer(folio, s, 30))
        with pytest.raises(ValueError):
            session.with_transaction(lambda s: transfer(folio, s, 1000))
    balances = {a["_id"]: a["balance"] for a in folio.bank.accounts.find()}
    assert balances == {"alice": 70, "bob": 30}


def test_the_session_server_is_shared_and_advertises_its_port(folio, folio_server):
    assert folio_server.uri == f"mongodb://127.0.0.1:{folio_server.port}/?replicaSet=rs0"
    hello = folio.admin.command("hello")
    assert hello["me"] == f"localhost:{folio_server.port}"
    assert hello["setName"] == "rs0"


def test_stop_ends_the_process():
    with FolioServer() as server:
        with server.client() as c:
            assert c.admin.command("ping")["ok"] == 1.0
        process = server.process
    assert process.poll() is not None


def test_the_server_does_not_outlive_a_killed_parent():
    # A child interpreter starts a server, prints its pid, then is killed outright.
    script = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})\n"
        "from pytest_folio import FolioServer\n"
        "s = FolioServer().start()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # A zombie awaiting its reaper counts as gone.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the orphaned server is still running")
