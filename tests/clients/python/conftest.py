"""Shared fixtures: one client on the server under test, and a fresh database per test module.

The server is taken from FOLIO_URI, by default a Folio server on the local default port that
introduces itself as the replica set ``rs0``.
"""

import os

import pytest
from pymongo import MongoClient

FOLIO_URI = os.environ.get("FOLIO_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")


@pytest.fixture(scope="session")
def client():
    """One pooled client for the whole run, as an application would hold it."""
    c = MongoClient(FOLIO_URI, serverSelectionTimeoutMS=15000, socketTimeoutMS=60000)
    c.admin.command("ping")
    yield c
    c.close()


@pytest.fixture(scope="module")
def db(client, request):
    """A database named after the test module, dropped before the module runs."""
    name = "folio_py_" + request.module.__name__.split(".")[-1]
    client.drop_database(name)
    return client[name]
