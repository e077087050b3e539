"""Authentication and TLS through pymongo (issue #12).

Runs against the auth-enabled server that ``scripts/client-tests`` starts (``--auth --tlsMode
preferTLS``), named by FOLIO_AUTH_HOST, with the CA of its certificate in FOLIO_TLS_CA_FILE. The
first user is created through the localhost exception (or was already, by another suite).
"""

import os
import urllib.parse

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

AUTH_HOST = os.environ.get("FOLIO_AUTH_HOST")
CA_FILE = os.environ.get("FOLIO_TLS_CA_FILE")

pytestmark = pytest.mark.skipif(
    not AUTH_HOST or not CA_FILE,
    reason="FOLIO_AUTH_HOST / FOLIO_TLS_CA_FILE not set (scripts/client-tests sets them)",
)

ADMIN_PASSWORD = "folio-admin-pw"
DB = "folio_py_auth"


def uri(user=None, password=None, tls=True, **params):
    creds = ""
    if user is not None:
        creds = f"{urllib.parse.quote_plus(user)}:{urllib.parse.quote_plus(password)}@"
    query = {"directConnection": "true", **params}
    if tls:
        query.update(tls="true", tlsCAFile=CA_FILE)
    return f"mongodb://{creds}{AUTH_HOST}/{DB}?{urllib.parse.urlencode(query)}"


def connect(*args, **kwargs):
    return MongoClient(uri(*args, **kwargs), serverSelectionTimeoutMS=10000)


@pytest.fixture(scope="module")
def admin():
    """A root client; creates the first user through the localhost exception if nobody has."""
    with connect() as anonymous:
        try:
            anonymous.admin.command(
                "createUser", "admin", pwd=ADMIN_PASSWORD, roles=["root"]
            )
        except OperationFailure as e:
            # 13: the localhost exception is over, another suite created the first user.
            assert e.code == 13, e
    c = connect("admin", ADMIN_PASSWORD, authSource="admin")
    # Leftovers of an earlier run against the same server.
    for db, user in (("admin", "py_writer"), (DB, "py_reader")):
        try:
            c[db].command("dropUser", user)
        except OperationFailure as e:
            assert e.code == 11, e
    c.admin.command(
        "createUser", "py_writer", pwd="w pass,=1", roles=[{"role": "readWrite", "db": DB}]
    )
    c[DB].command("createUser", "py_reader", pwd="r-pass", roles=["read"])
    c.drop_database(DB)
    c[DB].orders.insert_one({"_id": 0, "total": 1})
    yield c
    c.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
@pytest.mark.parametrize("tls", [True, False])
def test_user_pass_uri_with_each_mechanism(admin, mechanism, tls):
    with connect(
        "py_writer", "w pass,=1", tls=tls, authSource="admin", authMechanism=mechanism
    ) as c:
        orders = c[DB].orders
        orders.insert_one({"mechanism": mechanism, "tls": tls})
        assert orders.count_documents({"mechanism": mechanism, "tls": tls}) == 1
        status = c.admin.command("connectionStatus")
        assert status["authInfo"]["authenticatedUsers"] == [{"user": "py_writer", "db": "admin"}]


def test_default_mechanism_negotiation(admin):
    with connect("py_writer", "w pass,=1", authSource="admin") as c:
        assert c[DB].orders.find_one({"_id": 0})["total"] == 1


def test_wrong_password_is_authentication_failed(admin):
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        with connect("py_writer", "nope", authSource="admin", authMechanism=mechanism) as c:
            with pytest.raises(OperationFailure) as e:
                c[DB].orders.find_one()
            assert e.value.code == 18, e.value


def test_unauthenticated_commands_are_unauthorized(admin):
    with connect() as c:
        c.admin.command("ping")
        with pytest.raises(OperationFailure) as e:
            c[DB].orders.find_one()
        assert e.value.code == 13
        assert "requires authentication" in str(e.value)


def test_read_user_cannot_write(admin):
    with connect("py_reader", "r-pass", authSource=DB) as c:
        assert c[DB].orders.find_one({"_id": 0}) is not None
        with pytest.raises(OperationFailure) as e:
            c[DB].orders.insert_one({"x": 1})
        assert e.value.code == 13


def test_read_write_user_stays_in_its_database(admin):
    with connect("py_writer", "w pass,=1", authSource="admin") as c:
        with pytest.raises(OperationFailure) as e:
            c["folio_py_other"].things.insert_one({"x": 1})
        assert e.value.code == 13
        with pytest.raises(OperationFailure) as e:
            c[DB].command("dropUser", "py_reader")
        assert e.value.code == 13
        assert c.list_database_names() == [DB]
