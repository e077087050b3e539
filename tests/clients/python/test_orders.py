"""The order scenarios of the seeds through pymongo: the driver guide's Core API ``placeOrder``
with its sample data and its "Payment Transaction Result", the insufficient-quantity rollback,
the same order through ``with_transaction``, and 50 concurrent buyers for the last 5 units."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from bson import ObjectId
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

CART = [
    {"name": "sunblock", "sku": 5432, "qty": 1, "price": 5.19},
    {"name": "beach towel", "sku": 7865, "qty": 2, "price": 15.99},
]
PAYMENT = {"customer": 98765, "total": 37.17}


class InsufficientQuantity(Exception):
    """The cart asks for more than the inventory holds."""


def place_order(client, db, cart, payment):
    """The Core API example: explicit start, commit, and abort on any error."""
    with client.start_session() as session:
        session.start_transaction(
            read_concern=ReadConcern("snapshot"),
            write_concern=WriteConcern(w="majority"),
            read_preference=ReadPreference.PRIMARY,
        )
        try:
            order_result = db.orders.insert_one(
                {"customer": payment["customer"], "items": cart, "total": payment["total"]},
                session=session,
            )
            for item in cart:
                # Cancel the transaction when there is insufficient inventory.
                check = db.inventory.find_one(
                    {"sku": item["sku"], "qty": {"$gte": item["qty"]}}, session=session
                )
                if check is None:
                    raise InsufficientQuantity("Insufficient quantity or SKU not found.")
                db.inventory.update_one(
                    {"sku": item["sku"]}, {"$inc": {"qty": -item["qty"]}}, session=session
                )
            db.customers.update_one(
                {"_id": payment["customer"]},
                {"$push": {"orders": order_result.inserted_id}},
                session=session,
            )
            session.commit_transaction()
        except (InsufficientQuantity, PyMongoError):
            session.abort_transaction()
            raise


def place_order_callback(db, cart, payment):
    """The Callback API body: ``with_transaction`` commits it, or aborts on an exception."""

    def callback(session):
        order_result = db.orders.insert_one(
            {"customer": payment["customer"], "items": cart, "total": payment["total"]},
            session=session,
        )
        for item in cart:
            if db.inventory.find_one({"sku": item["sku"], "qty": {"$gte": item["qty"]}}, session=session) is None:
                raise InsufficientQuantity("Insufficient quantity or SKU not found.")
            db.inventory.update_one({"sku": item["sku"]}, {"$inc": {"qty": -item["qty"]}}, session=session)
        db.customers.update_one(
            {"_id": payment["customer"]}, {"$push": {"orders": order_result.inserted_id}}, session=session
        )

    return callback


def load_sample_data(db):
    """The guide's sample data; the collections exist before any transaction runs."""
    for name in ("customers", "inventory", "orders"):
        db.drop_collection(name)
    db.customers.insert_one({"_id": 98765, "orders": []})
    db.inventory.insert_many(
        [{"name": "sunblock", "sku": 5432, "qty": 85}, {"name": "beach towel", "sku": 7865, "qty": 41}]
    )
    db.create_collection("orders")


def snapshot(db):
    """Every document of the three collections, in natural order."""
    return {name: list(db[name].find()) for name in ("customers", "inventory", "orders")}


def assert_payment_transaction_result(db):
    orders = list(db.orders.find())
    assert len(orders) == 1
    order = orders[0]
    assert list(order.keys()) == ["_id", "customer", "items", "total"]
    assert isinstance(order["_id"], ObjectId)
    assert order == {"_id": order["_id"], "customer": 98765, "items": CART, "total": 37.17}
    assert list(db.customers.find()) == [{"_id": 98765, "orders": [order["_id"]]}]
    inventory = list(db.inventory.find())
    assert [list(i.keys()) for i in inventory] == [["_id", "name", "sku", "qty"]] * 2
    assert [{k: v for k, v in i.items() if k != "_id"} for i in inventory] == [
        {"name": "sunblock", "sku": 5432, "qty": 84},
        {"name": "beach towel", "sku": 7865, "qty": 39},
    ]


def test_core_api_payment_transaction_result(client, db):
    load_sample_data(db)
    place_order(client, db, CART, PAYMENT)
    assert_payment_transaction_result(db)


def test_core_api_insufficient_quantity_changes_nothing(client, db):
    load_sample_data(db)
    before = snapshot(db)
    cart = [dict(CART[0]), dict(CART[1], qty=42)]
    with pytest.raises(InsufficientQuantity):
        place_order(client, db, cart, PAYMENT)
    assert snapshot(db) == before
    assert before["orders"] == []


def test_with_transaction_payment_transaction_result(client, db):
    load_sample_data(db)
    with client.start_session() as session:
        session.with_transaction(
            place_order_callback(db, CART, PAYMENT),
            read_concern=ReadConcern("local"),
            write_concern=WriteConcern(w="majority"),
            read_preference=ReadPreference.PRIMARY,
            max_commit_time_ms=1000,
        )
    assert_payment_transaction_result(db)


def test_with_transaction_insufficient_quantity_changes_nothing(client, db):
    load_sample_data(db)
    before = snapshot(db)
    with client.start_session() as session:
        with pytest.raises(InsufficientQuantity):
            session.with_transaction(place_order_callback(db, [dict(CART[0], qty=86)], PAYMENT))
    assert snapshot(db) == before


class SoldOut(Exception):
    """No unit left in the buyer's snapshot."""


def test_fifty_concurrent_buyers_for_the_last_five_units(client, db):
    product_id = db.products.insert_one({"name": "Last Units", "price": 10, "stock": 5}).inserted_id
    db.create_collection("buyer_orders")
    stop = threading.Event()
    seen = []

    def watch():
        while not stop.is_set():
            seen.append(db.products.find_one({"_id": product_id})["stock"])
            time.sleep(0.002)

    def buy(buyer):
        def callback(session):
            product = db.products.find_one({"_id": product_id}, session=session)
            if product["stock"] < 1:
                raise SoldOut()
            db.products.update_one({"_id": product_id}, {"$inc": {"stock": -1}}, session=session)
            db.buyer_orders.insert_one({"buyer": buyer, "productId": product_id}, session=session)

        with client.start_session() as session:
            try:
                session.with_transaction(callback)
                return "bought"
            except SoldOut:
                return "sold out"

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            outcomes = list(pool.map(buy, range(50)))
    finally:
        stop.set()
        watcher.join()
    assert outcomes.count("bought") == 5
    assert outcomes.count("sold out") == 45
    assert min(seen) >= 0
    assert db.products.find_one({"_id": product_id})["stock"] == 0
    assert db.buyer_orders.count_documents({}) == 5


def test_read_check_write_race_first_writer_wins(client, db):
    """Five transactions all read the last unit (a barrier holds their writes until every one has
    read): the first writer wins, the four others get WriteConflict, labelled transient."""
    product_id = db.products.insert_one({"name": "Racy", "price": 1, "stock": 1}).inserted_id
    gate = threading.Barrier(5, timeout=30)

    def buy(_):
        with client.start_session() as session:
            session.start_transaction()
            try:
                product = db.products.find_one({"_id": product_id}, session=session)
                gate.wait()
                if product["stock"] < 1:
                    raise SoldOut()
                db.products.update_one({"_id": product_id}, {"$inc": {"stock": -1}}, session=session)
                session.commit_transaction()
                return "bought"
            except OperationFailure as error:
                session.abort_transaction()
                return (error.code, error.has_error_label("TransientTransactionError"))

    with ThreadPoolExecutor(max_workers=5) as pool:
        outcomes = list(pool.map(buy, range(5)))
    assert outcomes.count("bought") == 1
    assert sorted(o for o in outcomes if o != "bought") == [(112, True)] * 4
    assert db.products.find_one({"_id": product_id})["stock"] == 0
