'use strict';
// "Transactions" (MongoDB Node.js driver guide): the Core API `placeOrder` with the guide's sample
// data, checked against the guide's "Payment Transaction Result"; the insufficient-quantity path
// must leave every collection unchanged. The guide's functions use the database `testdb`, which
// only this file uses.

const { describe, it, before, after, mock } = require('node:test');
const assert = require('node:assert/strict');
const { MongoError } = require('mongodb');

const { connectClient } = require('../lib/connect');

// The guide's Core API implementation, as written.
async function placeOrder(client, cart, payment) {
  const transactionOptions = {
    readConcern: { level: 'snapshot' },
    writeConcern: { w: 'majority' },
    readPreference: 'primary'
  };

  const session = client.startSession();
  try {
    session.startTransaction(transactionOptions);

    const ordersCollection = client.db('testdb').collection('orders');
    const orderResult = await ordersCollection.insertOne(
      {
        customer: payment.customer,
        items: cart,
        total: payment.total,
      },
      { session }
    );

    const inventoryCollection = client.db('testdb').collection('inventory');
    for (let i=0; i<cart.length; i++) {
      const item = cart[i];

      // Cancel the transaction when you have insufficient inventory
      const checkInventory = await inventoryCollection.findOne(
        {
          sku: item.sku,
          qty: { $gte: item.qty }
        },
        { session }
      )
      if (checkInventory === null) {
        throw new Error('Insufficient quantity or SKU not found.');
      }

      await inventoryCollection.updateOne(
        { sku: item.sku },
        { $inc: { 'qty': -item.qty }},
        { session }
      );
    }

    const customerCollection = client.db('testdb').collection('customers');
    await customerCollection.updateOne(
      { _id: payment.customer },
      { $push: { orders: orderResult.insertedId }},
      { session }
    );
    await session.commitTransaction();
    console.log('Transaction successfully committed.');

  } catch (error) {
    if (error instanceof MongoError && error.hasErrorLabel('UnknownTransactionCommitResult')) {
      // add your logic to retry or handle the error
    }
    else if (error instanceof MongoError && error.hasErrorLabel('TransientTransactionError')) {
      // add your logic to retry or handle the error
    } else {
      console.log('An error occured in the transaction, performing a data rollback:' + error);
    }
    await session.abortTransaction();
  } finally {
    await session.endSession();
  }
}

// The guide's Callback API implementation: the callback passed to withTransaction().
async function placeOrderCallback(client, session, cart, payment) {
  const ordersCollection = client.db('testdb').collection('orders');
  const orderResult = await ordersCollection.insertOne(
    {
      customer: payment.customer,
      items: cart,
      total: payment.total,
    },
    { session }
  );

  const inventoryCollection = client.db('testdb').collection('inventory');
  for (let i=0; i<cart.length; i++) {
    const item = cart[i];

    // Cancel the transaction when you have insufficient inventory
    const checkInventory = await inventoryCollection.findOne(
      {
        sku: item.sku,
        qty: { $gte: item.qty }
      },
      { session }
    );

    if (checkInventory === null) {
      await session.abortTransaction();
      console.error('Insufficient quantity or SKU not found.');
    }

    await inventoryCollection.updateOne(
      { sku: item.sku },
      { $inc: { 'qty': -item.qty }},
      { session }
    );
  }

  const customerCollection = client.db('testdb').collection('customers');
  await customerCollection.updateOne(
    { _id: payment.customer },
    { $push: { orders: orderResult.insertedId }},
    { session }
  );
}

let client;

/** Recreates the guide's sample data; the collections exist before any transaction. */
async function loadSampleData() {
  const db = client.db('testdb');
  await db.dropDatabase();
  await db.collection('customers').insertOne({ _id: 98765, orders: [] });
  await db.collection('inventory').insertMany([ { name: "sunblock", sku: 5432, qty: 85 }, { name: "beach towel", sku: 7865, qty: 41 } ]);
  await db.createCollection('orders');
}

/** Every document of the three collections, in natural order, without the generated ids. */
async function snapshot() {
  const db = client.db('testdb');
  const strip = ({ _id, ...rest }) => rest;
  return {
    customers: await db.collection('customers').find().toArray(),
    inventory: (await db.collection('inventory').find().toArray()).map(strip),
    orders: (await db.collection('orders').find().toArray()).map(strip),
  };
}

const cart = [ { name: 'sunblock', sku: 5432, qty: 1, price: 5.19 }, { name: 'beach towel', sku: 7865, qty: 2, price: 15.99 } ]; const payment = { customer: 98765, total: 37.17 };

before(async () => {
  client = await connectClient();
});

after(async () => {
  await client.close();
});

/** Asserts the guide's "Payment Transaction Result" exactly. */
async function assertPaymentTransactionResult() {
  const db = client.db('testdb');
  const orders = await db.collection('orders').find().toArray();
  assert.equal(orders.length, 1);
  const [order] = orders;
  assert.deepEqual(Object.keys(order), ['_id', 'customer', 'items', 'total']);
  assert.equal(order._id._bsontype, 'ObjectId');
  assert.deepEqual(order, {
    _id: order._id,
    customer: 98765,
    items: [ { name: 'sunblock', sku: 5432, qty: 1, price: 5.19 }, { name: 'beach towel', sku: 7865, qty: 2, price: 15.99 } ],
    total: 37.17,
  });

  const customers = await db.collection('customers').find().toArray();
  assert.deepEqual(customers, [{ _id: 98765, orders: [order._id] }]);

  const inventory = await db.collection('inventory').find().toArray();
  assert.equal(inventory.length, 2);
  for (const item of inventory) {
    assert.deepEqual(Object.keys(item), ['_id', 'name', 'sku', 'qty']);
  }
  assert.deepEqual(inventory.map(({ _id, ...rest }) => rest), [
    { name: 'sunblock', sku: 5432, qty: 84 },
    { name: 'beach towel', sku: 7865, qty: 39 },
  ]);
}

describe('Core API placeOrder', () => {
  it('produces the Payment Transaction Result', async () => {
    await loadSampleData();
    const logs = mock.method(console, 'log', () => {});
    try {
      await placeOrder(client, cart, payment);
    } finally {
      logs.mock.restore();
    }
    assert.deepEqual(logs.mock.calls.map((c) => c.arguments[0]), ['Transaction successfully committed.']);
    await assertPaymentTransactionResult();
  });

  it('insufficient quantity rolls back and leaves every collection unchanged', async () => {
    await loadSampleData();
    const before = await snapshot();
    const bigCart = [ { name: 'sunblock', sku: 5432, qty: 1, price: 5.19 }, { name: 'beach towel', sku: 7865, qty: 42, price: 15.99 } ];
    const logs = mock.method(console, 'log', () => {});
    try {
      await placeOrder(client, bigCart, payment);
    } finally {
      logs.mock.restore();
    }
    assert.deepEqual(logs.mock.calls.map((c) => c.arguments[0]), [
      'An error occured in the transaction, performing a data rollback:Error: Insufficient quantity or SKU not found.',
    ]);
    assert.deepEqual(await snapshot(), before);
    assert.deepEqual(before.orders, []);
  });

  it('an unknown SKU rolls back the order already inserted', async () => {
    await loadSampleData();
    const before = await snapshot();
    const logs = mock.method(console, 'log', () => {});
    try {
      await placeOrder(client, [{ name: 'parasol', sku: 1111, qty: 1, price: 25 }], { customer: 98765, total: 25 });
    } finally {
      logs.mock.restore();
    }
    assert.deepEqual(await snapshot(), before);
  });
});

describe('Callback API placeOrder', () => {
  it('withTransaction produces the same Payment Transaction Result', async () => {
    await loadSampleData();
    const transactionOptions = {
      readPreference: 'primary',
      readConcern: { level: 'local' },
      writeConcern: { w: 'majority' },
      maxCommitTimeMS: 1000
    };

    const session = client.startSession();
    try {
      await session.withTransaction(
        async (session) => placeOrderCallback(client, session, cart, payment),
        transactionOptions);
    } finally {
      await session.endSession();
    }
    await assertPaymentTransactionResult();
  });

  it('insufficient quantity: the callback aborts, and its later writes run outside the transaction', async () => {
    // The guide's callback calls abortTransaction() and goes on: the order insert and the first
    // decrement are rolled back, but the session is then in no transaction, so the remaining
    // update and the $push run as ordinary (retryable) writes, and withTransaction() returns
    // normally since the callback "intentionally aborted". This is the driver's documented state
    // machine; the server must accept the session's next writes after the abort.
    await loadSampleData();
    const bigCart = [ { name: 'sunblock', sku: 5432, qty: 1, price: 5.19 }, { name: 'beach towel', sku: 7865, qty: 42, price: 15.99 } ];
    const errors = mock.method(console, 'error', () => {});
    const session = client.startSession();
    try {
      await session.withTransaction(
        async (session) => placeOrderCallback(client, session, bigCart, payment));
    } finally {
      await session.endSession();
      errors.mock.restore();
    }
    assert.deepEqual(errors.mock.calls.map((c) => c.arguments[0]), ['Insufficient quantity or SKU not found.']);
    const after = await snapshot();
    assert.deepEqual(after.orders, []);
    assert.deepEqual(after.inventory, [
      { name: 'sunblock', sku: 5432, qty: 85 },
      { name: 'beach towel', sku: 7865, qty: -1 },
    ]);
    assert.equal(after.customers.length, 1);
    assert.equal(after.customers[0].orders.length, 1, 'the id of the rolled-back order was pushed');
    assert.equal(await client.db('testdb').collection('orders').countDocuments({ _id: after.customers[0].orders[0] }), 0);
  });
});
