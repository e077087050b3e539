'use strict';
// The reason the seeds exist: many clients at once on the same documents. Each scenario asserts
// an invariant that snapshot isolation with first-writer-wins conflicts must keep: no oversold
// stock, no money created or lost, no lost update.

const { describe, it, before, after, mock } = require('node:test');
const assert = require('node:assert/strict');
const mongoose = require('mongoose');

const { connectMongoose, hasLabel, sleep } = require('../lib/connect');
const { Product, Order, User, Account } = require('../lib/seed000-models');
const { processOrder, updateProductWithOptimisticLocking, ConcurrencyManager } = require('../lib/seed000');

const DB = 'folio_node_concurrency';

/** A small deterministic pseudo-random generator, so a failing run can be replayed. */
function lcg(seed) {
  let state = seed >>> 0;
  return (n) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
}

/** A barrier for `n` parties: each `arrive()` resolves once all `n` have arrived. */
function barrier(n) {
  let arrived = 0;
  let release;
  const all = new Promise((resolve) => { release = resolve; });
  return () => {
    arrived++;
    if (arrived === n) {
      release();
    }
    return all;
  };
}

/** Makes every call of `Model[method]` wait at `arrive()` first, so all callers have read before any writes. */
function holdWritesAt(Model, method, arrive) {
  const original = Model[method];
  return mock.method(Model, method, async function held(...args) {
    await arrive();
    return original.apply(this, args);
  });
}

/** Polls the stock of a product outside any transaction until stopped; returns the minimum seen. */
function watchStock(productId) {
  let stopped = false;
  let min = Infinity;
  const done = (async () => {
    while (!stopped) {
      const product = await Product.findById(productId).lean();
      min = Math.min(min, product.stock);
      await sleep(2);
    }
    return min;
  })();
  return { stop: async () => { stopped = true; return done; } };
}

before(async () => {
  await connectMongoose(DB);
});

after(async () => {
  await mongoose.disconnect();
});

describe('50 concurrent buyers for the last 5 units', () => {
  it('processOrder (a transaction): exactly 5 orders, stock never negative', { timeout: 180000 }, async () => {
    const [product] = await Product.create([{ name: 'Last Units', price: 10, stock: 5 }]);
    const buyers = await User.create(Array.from({ length: 50 }, (_, i) => ({ name: `buyer-${i}` })));
    const watcher = watchStock(product._id);
    const unexpected = [];
    let conflicts = 0;

    /** One buyer: retries the whole transaction on a transient error, gives up when sold out. */
    async function buy(user) {
      for (let attempt = 0; attempt < 200; attempt++) {
        try {
          await processOrder(user._id, [{ productId: product._id, quantity: 1 }]);
          return 'bought';
        } catch (error) {
          if (hasLabel(error, 'TransientTransactionError')) {
            conflicts++;
            await sleep(1 + Math.random() * 20);
            continue;
          }
          if (error.message === `Insufficient stock for product ${product._id}`) {
            return 'sold out';
          }
          unexpected.push(error);
          return 'error';
        }
      }
      return 'gave up';
    }

    const outcomes = await Promise.all(buyers.map(buy));
    const minStock = await watcher.stop();
    assert.deepEqual(unexpected.map(String), []);
    assert.equal(outcomes.filter((o) => o === 'bought').length, 5);
    assert.equal(outcomes.filter((o) => o === 'sold out').length, 45);
    assert.ok(minStock >= 0, `stock was seen at ${minStock}`);
    assert.equal((await Product.findById(product._id).lean()).stock, 0);
    assert.equal(await Order.countDocuments({ 'items.productId': product._id }), 5);
    const spenders = await User.find({ _id: { $in: buyers.map((b) => b._id) }, totalSpent: 10 }).lean();
    assert.equal(spenders.length, 5);
    assert.ok(spenders.every((u) => u.orderHistory.length === 1));
    // Every buyer saw 5 units in its snapshot at first: the losers must have met conflicts.
    assert.ok(conflicts > 0, 'concurrent transactions writing one product must conflict');
  });

  it('the conditional update ($gte guard, no transaction): exactly 5 succeed', async () => {
    const [product] = await Product.create([{ name: 'Guarded', price: 10, stock: 5 }]);
    const productId = product._id;
    const requestedQuantity = 1;
    const results = await Promise.all(Array.from({ length: 50 }, () =>
      // Only decrement stock if sufficient quantity exists
      Product.updateOne(
        { 
          _id: productId, 
          stock: { $gte: requestedQuantity } 
        },
        { 
          $inc: { stock: -requestedQuantity },
          $set: { lastSold: new Date() }
        }
      )
    ));
    assert.equal(results.filter((r) => r.matchedCount === 1).length, 5);
    assert.equal(results.filter((r) => r.matchedCount === 0).length, 45);
    assert.equal((await Product.findById(productId).lean()).stock, 0);
  });
});

describe('the race condition of the guide, made certain with a barrier', () => {
  it('purchaseItem without a transaction: five buyers who all saw the last unit oversell it', async () => {
    // The article leaves `createOrder` out.
    async function createOrder(userId, productId) {
      return await Order.create({ userId, items: [{ productId, quantity: 1 }], totalAmount: 1, status: 'confirmed' });
    }
    // PROBLEMATIC: Race condition prone

    async function purchaseItem(productId, userId) {
      const product = await Product.findById(productId);
      
      if (product.stock > 0) {
        // Between this check and the update, another request might succeed 
        await Product.updateOne(
          { _id: productId },
          { $inc: { stock: -1 } }
        );
        
        // Could result in negative stock!
        return await createOrder(userId, productId);
      }
      
      throw new Error('Out of stock');
    }

    const [product] = await Product.create([{ name: 'Racy', price: 1, stock: 1 }]);
    const held = holdWritesAt(Product, 'updateOne', barrier(5));
    try {
      await Promise.all(Array.from({ length: 5 }, () => purchaseItem(product._id, new mongoose.Types.ObjectId())));
    } finally {
      held.mock.restore();
    }
    assert.equal((await Product.findById(product._id).lean()).stock, -4);
    assert.equal(await Order.countDocuments({ 'items.productId': product._id }), 5);
  });

  it('processOrder: the same read-check-write in transactions sells the last unit once', async () => {
    const [product] = await Product.create([{ name: 'Safe', price: 1, stock: 1 }]);
    const buyers = await User.create(Array.from({ length: 5 }, (_, i) => ({ name: `racer-${i}` })));
    const held = holdWritesAt(Product, 'bulkWrite', barrier(5));
    let outcomes;
    try {
      outcomes = await Promise.allSettled(buyers.map((b) => processOrder(b._id, [{ productId: product._id, quantity: 1 }])));
    } finally {
      held.mock.restore();
    }
    // Every transaction read stock 1 in its snapshot; the first writer wins, the others conflict.
    const losers = outcomes.filter((o) => o.status === 'rejected').map((o) => o.reason);
    assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1);
    assert.equal(losers.length, 4);
    for (const error of losers) {
      assert.equal(error.code, 112, String(error));
      assert.ok(hasLabel(error, 'TransientTransactionError'), String(error));
    }
    assert.equal((await Product.findById(product._id).lean()).stock, 0);
    assert.equal(await Order.countDocuments({ 'items.productId': product._id }), 1);
  });
});

describe('200 concurrent transfers among 10 accounts through withTransaction', () => {
  it('every transfer completes and the total balance is unchanged', { timeout: 300000 }, async () => {
    const START = 10000;
    const accounts = await Account.create(Array.from({ length: 10 }, (_, i) => ({
      accountType: `acct-${i}`,
      balance: START,
    })));
    const random = lcg(20260101);
    const transfers = Array.from({ length: 200 }, () => {
      const from = random(10);
      const to = (from + 1 + random(9)) % 10;
      return { from, to, amount: 1 + random(50) };
    });
    const expected = accounts.map(() => START);
    for (const { from, to, amount } of transfers) {
      expected[from] -= amount;
      expected[to] += amount;
    }

    let attempts = 0;
    /** The seeds' transfer, run by the driver's withTransaction (which retries transient errors). */
    async function transfer({ from, to, amount }) {
      const fromAccountId = accounts[from]._id;
      const toAccountId = accounts[to]._id;
      const session = await mongoose.startSession();
      try {
        await session.withTransaction(async () => {
          attempts++;
          const fromAccount = await Account.findById(fromAccountId).session(session);
          if (fromAccount.balance < amount) {
            throw new Error('Insufficient funds');
          }
          await Account.updateOne({ _id: fromAccountId }, { $inc: { balance: -amount } }, { session });
          await Account.updateOne({ _id: toAccountId }, { $inc: { balance: amount } }, { session });
        });
        return 'ok';
      } finally {
        await session.endSession();
      }
    }

    const outcomes = await Promise.allSettled(transfers.map(transfer));
    const failures = outcomes.filter((o) => o.status === 'rejected').map((o) => String(o.reason));
    assert.deepEqual(failures, []);
    const final = await Account.find({ _id: { $in: accounts.map((a) => a._id) } }).lean();
    const byId = new Map(final.map((a) => [String(a._id), a.balance]));
    const balances = accounts.map((a) => byId.get(String(a._id)));
    assert.equal(balances.reduce((x, y) => x + y, 0), START * 10);
    assert.deepEqual(balances, expected);
    assert.ok(attempts >= 200);
  });
});

describe('optimistic locking under 20 concurrent updaters', () => {
  it('updateProductWithOptimisticLocking + withRetry: each version is taken by exactly one update', { timeout: 120000 }, async () => {
    const [product] = await Product.create([{ name: 'Versioned', stock: 0, price: 1, tags: [] }]);
    const outcomes = await Promise.allSettled(Array.from({ length: 20 }, (_, i) =>
      ConcurrencyManager.withRetry(async () => {
        return await updateProductWithOptimisticLocking(product._id, { $push: { tags: `updater-${i}` } });
      })
    ));
    const won = [];
    outcomes.forEach((o, i) => {
      if (o.status === 'fulfilled') {
        assert.equal(o.value.matchedCount, 1);
        won.push(`updater-${i}`);
      } else {
        // The only acceptable failure: the retries ran out on version conflicts.
        assert.equal(o.reason.message, 'Version conflict detected');
      }
    });
    const stored = await Product.findById(product._id).lean();
    assert.ok(won.length > 0);
    assert.equal(stored.__v, won.length);
    assert.deepEqual([...stored.tags].sort(), won.sort());
  });

  it('the version check as a read-modify-write counter loses no increment', { timeout: 120000 }, async () => {
    const [product] = await Product.create([{ name: 'Counter', stock: 0, price: 1 }]);
    let conflicts = 0;
    async function increment() {
      for (let attempt = 0; attempt < 1000; attempt++) {
        const current = await Product.findById(product._id);
        const result = await Product.updateOne(
          { _id: product._id, __v: current.__v },  // Version check
          { $set: { stock: current.stock + 1 }, $inc: { __v: 1 } },
        );
        if (result.matchedCount === 1) {
          return;
        }
        conflicts++;
        await sleep(Math.random() * 10);
      }
      throw new Error('Max retries exceeded due to version conflicts');
    }
    await Promise.all(Array.from({ length: 20 }, increment));
    const stored = await Product.findById(product._id).lean();
    assert.equal(stored.stock, 20);
    assert.equal(stored.__v, 20);
  });
});
