'use strict';
// "Mastering Mongoose Transactions: A Comprehensive Guide": every example of the article, run
// through mongoose against the server, with the outcome MongoDB gives asserted.

const { describe, it, before, after, mock } = require('node:test');
const assert = require('node:assert/strict');
const mongoose = require('mongoose');

const { connectMongoose, hasLabel } = require('../lib/connect');
const { Product, Order, User, Account, AuditLog } = require('../lib/seed000-models');
const {
  createUserWithAccount,
  processOrder,
  updateProductWithOptimisticLocking,
  reserveInventory,
  ConcurrencyManager,
  executeTransactionWithRecovery,
  transferFunds,
  bulkOrderProcessing,
  brokenTransaction,
  correctTransaction,
  nestedTransactionProblem,
  singleSessionCorrect,
  debugMongoConnection,
  testOrderProcessingTransaction,
} = require('../lib/seed000');

const DB = 'folio_node_seed000';

/** Stock of one product, read outside any transaction. */
async function stockOf(productId) {
  const product = await Product.findById(productId).lean();
  return product.stock;
}

before(async () => {
  // The connection options of the article's "Performance Optimization Strategies".
  await connectMongoose(DB, {
    maxPoolSize: 10,           // Maximum connections
    socketTimeoutMS: 45000,
    maxIdleTimeMS: 30000,
    // Enable retryable writes
    retryWrites: true,
    // Read/write concerns for consistency
    readConcern: { level: 'majority' },
    writeConcern: { w: 'majority', j: true }
  });
});

after(async () => {
  await mongoose.disconnect();
});

describe('sessions and the transaction lifecycle', () => {
  it('debugMongoConnection reports that transactions are available', async () => {
    assert.equal(await debugMongoConnection(), true);
    const status = await mongoose.connection.db.admin().command({ replSetGetStatus: 1 });
    assert.equal(status.ok, 1);
    assert.equal(status.set, 'rs0');
    assert.equal(status.myState, 1);
    assert.ok(status.members.some((m) => m.stateStr === 'PRIMARY' && m.health === 1));
  });

  it('the first example commits a user, an account and an audit log together', async () => {
    await createUserWithAccount();
    const user = await User.findOne({ email: 'john@example.com' }).lean();
    assert.equal(user.name, 'John Doe');
    assert.equal(user.balance, 1000);
    const accounts = await Account.find({ userId: user._id }).lean();
    assert.equal(accounts.length, 1);
    assert.equal(accounts[0].accountType, 'checking');
    assert.equal(await AuditLog.countDocuments({ userId: user._id, action: 'user_created' }), 1);
  });

  it('the first example run twice fails on the unique email and leaves nothing behind', async () => {
    const errors = mock.method(console, 'error', () => {});
    try {
      await assert.rejects(createUserWithAccount(), (error) => {
        assert.equal(error.code, 11000, `expected a duplicate key error, got ${error}`);
        return true;
      });
    } finally {
      errors.mock.restore();
    }
    assert.equal(await User.countDocuments({ email: 'john@example.com' }), 1);
    assert.equal(await Account.countDocuments(), 1);
    assert.equal(await AuditLog.countDocuments(), 1);
  });
});

describe('e-commerce order processing (processOrder)', () => {
  let user;
  let laptop;
  let mouse;

  before(async () => {
    [user] = await User.create([{ name: 'Buyer' }]);
    [laptop, mouse] = await Product.create([
      { name: 'Laptop', price: 100, stock: 10 },
      { name: 'Mouse', price: 25, stock: 3 },
    ]);
  });

  it('commits the inventory, the order and the user history together', async () => {
    const order = await processOrder(user._id, [
      { productId: laptop._id, quantity: 2 },
      { productId: mouse._id, quantity: 3 },
    ]);
    assert.equal(order.totalAmount, 275);
    assert.equal(order.status, 'confirmed');
    assert.equal(await stockOf(laptop._id), 8);
    assert.equal(await stockOf(mouse._id), 0);
    const stored = await Order.findById(order._id).lean();
    assert.equal(stored.items.length, 2);
    assert.equal(stored.items[1].quantity, 3);
    const buyer = await User.findById(user._id).lean();
    assert.deepEqual(buyer.orderHistory.map(String), [String(order._id)]);
    assert.equal(buyer.totalSpent, 275);
  });

  it('insufficient stock aborts and changes nothing', async () => {
    await assert.rejects(
      processOrder(user._id, [
        { productId: laptop._id, quantity: 1 },
        { productId: mouse._id, quantity: 1 },
      ]),
      { message: `Insufficient stock for product ${mouse._id}` },
    );
    assert.equal(await stockOf(laptop._id), 8);
    assert.equal(await stockOf(mouse._id), 0);
    assert.equal(await Order.countDocuments({ userId: user._id }), 1);
    assert.equal((await User.findById(user._id).lean()).totalSpent, 275);
  });
});

describe('atomic operators', () => {
  let productId;
  let userId;
  let orderId;
  const otherProduct = new mongoose.Types.ObjectId();

  before(async () => {
    const [product] = await Product.create([{ name: 'Camera', price: 300, stock: 4, tags: ['photo'] }]);
    productId = product._id;
    const [user] = await User.create([{
      name: 'Shopper',
      wishlist: [{ productId }, { productId: otherProduct }],
    }]);
    userId = user._id;
    const [order] = await Order.create([{
      userId,
      items: [
        { productId: otherProduct, name: 'Lens', price: 80, quantity: 3 },
        { productId, name: 'Camera', price: 300, quantity: 2 },
      ],
      totalAmount: 840,
      status: 'confirmed',
    }]);
    orderId = order._id;
  });

  it('$inc, $push and nested $set update one document indivisibly', async () => {
    const quantity = 2;
    // Increment product view count atomically
    await Product.updateOne(
      { _id: productId },
      { $inc: { viewCount: 1 } }
    );

    // Add item to user's cart atomically and increment cart item count
    await User.updateOne(
      { _id: userId },
      {
        $push: { cart: { productId, quantity, addedAt: new Date() } },
        $inc: { cartItemCount: 1 }
      }
    );

    // Update user profile with nested object changes
    await User.updateOne(
      { _id: userId },
      {
        $set: {
          'profile.lastActive': new Date(),
          'preferences.notifications': true
        },
        $inc: { 'stats.loginCount': 1 }
      }
    );

    assert.equal((await Product.findById(productId).lean()).viewCount, 1);
    const user = await User.findById(userId).lean();
    assert.equal(user.cart.length, 1);
    assert.equal(String(user.cart[0].productId), String(productId));
    assert.equal(user.cart[0].quantity, 2);
    assert.equal(user.cartItemCount, 1);
    assert.ok(user.profile.lastActive instanceof Date);
    assert.equal(user.preferences.notifications, true);
    assert.equal(user.stats.loginCount, 1);
  });

  it('a conditional update decrements stock only while enough is left', async () => {
    /** The article's conditional update, for one requested quantity. */
    async function sell(requestedQuantity) {
      // Only decrement stock if sufficient quantity exists
      const result = await Product.updateOne(
        { 
          _id: productId, 
          stock: { $gte: requestedQuantity } 
        },
        { 
          $inc: { stock: -requestedQuantity },
          $set: { lastSold: new Date() }
        }
      );

      if (result.matchedCount === 0) {
        throw new Error('Insufficient stock or product not found');
      }
      return result;
    }

    const result = await sell(3);
    assert.equal(result.matchedCount, 1);
    assert.equal(result.modifiedCount, 1);
    await assert.rejects(sell(2), { message: 'Insufficient stock or product not found' });
    const product = await Product.findById(productId).lean();
    assert.equal(product.stock, 1);
    assert.ok(product.lastSold instanceof Date);
  });

  it('$addToSet, $pull and the positional $ operator manipulate arrays', async () => {
    for (const newTag of ['sale', 'sale', 'photo']) {
      // Add unique tag to product (avoiding duplicates)
      await Product.updateOne(
        { _id: productId },
        { $addToSet: { tags: newTag } }
      );
    }

    const itemToRemove = otherProduct;
    // Remove specific item from user's wishlist
    await User.updateOne(
      { _id: userId },
      { $pull: { wishlist: { productId: itemToRemove } } }
    );

    // Update specific array element
    await Order.updateOne(
      { _id: orderId, 'items.productId': productId },
      {
        $set: { 'items.$.status': 'shipped' },
        $inc: { 'items.$.quantity': -1 }
      }
    );

    assert.deepEqual((await Product.findById(productId).lean()).tags, ['photo', 'sale']);
    const wishlist = (await User.findById(userId).lean()).wishlist;
    assert.deepEqual(wishlist.map((w) => String(w.productId)), [String(productId)]);
    const items = (await Order.findById(orderId).lean()).items;
    assert.equal(items[0].status, undefined);
    assert.equal(items[0].quantity, 3);
    assert.equal(items[1].status, 'shipped');
    assert.equal(items[1].quantity, 1);
  });
});

describe('optimistic concurrency with __v (updateProductWithOptimisticLocking)', () => {
  it('applies the update and increments the version', async () => {
    const [product] = await Product.create([{ name: 'Desk', stock: 5, price: 150 }]);
    assert.equal(product.__v, 0);
    const result = await updateProductWithOptimisticLocking(product._id, { $set: { price: 140 } });
    assert.equal(result.matchedCount, 1);
    assert.equal(result.modifiedCount, 1);
    const stored = await Product.findById(product._id).lean();
    assert.equal(stored.price, 140);
    assert.equal(stored.__v, 1);
  });

  it('ConcurrencyManager.withRetry runs it and a stale version never matches', async () => {
    const [product] = await Product.create([{ name: 'Chair', stock: 5, price: 60 }]);
    const productId = product._id;
    const updates = { $set: { price: 55 } };
    // Usage example
    const result = await ConcurrencyManager.withRetry(async () => {
      return await updateProductWithOptimisticLocking(productId, updates);
    });
    assert.equal(result.matchedCount, 1);
    // The version check the function relies on: the old __v no longer matches.
    const stale = await Product.updateOne({ _id: productId, __v: 0 }, { $set: { price: 1 }, $inc: { __v: 1 } });
    assert.equal(stale.matchedCount, 0);
    const stored = await Product.findById(productId).lean();
    assert.equal(stored.price, 55);
    assert.equal(stored.__v, 1);
  });

  it('withRetry gives up on a missing product without retrying', async () => {
    let calls = 0;
    await assert.rejects(
      ConcurrencyManager.withRetry(async () => {
        calls++;
        return await updateProductWithOptimisticLocking(new mongoose.Types.ObjectId(), { $set: { price: 1 } });
      }),
      { message: 'Product not found' },
    );
    assert.equal(calls, 1);
  });
});

describe('pessimistic reservation (reserveInventory)', () => {
  it('reserves once inside a transaction, then refuses', async () => {
    const [product] = await Product.create([{ name: 'Console', stock: 5, price: 400 }]);
    const result = await reserveInventory(product._id, 2);
    assert.equal(result.stock, 3);
    assert.equal(result.reservedStock, 2);
    assert.ok(result.reservedAt instanceof Date);
    // `reservedBy: session.id` stores the logical session id: { id: UUID }.
    assert.ok(result.reservedBy && result.reservedBy.id, 'reservedBy holds the lsid');
    assert.equal(result.reservedBy.id.sub_type, 4);

    await assert.rejects(reserveInventory(product._id, 1), {
      message: 'Unable to reserve inventory; insufficient stock or already reserved',
    });
    const stored = await Product.findById(product._id).lean();
    assert.equal(stored.stock, 3);
    assert.equal(stored.reservedStock, 2);
  });
});

describe('error recovery (executeTransactionWithRecovery, TransactionErrorHandler)', () => {
  it('retries a write conflict, labelled TransientTransactionError, and then succeeds', async () => {
    const [account] = await Account.create([{ accountType: 'savings', balance: 500 }]);
    const logs = mock.method(console, 'log', () => {});
    let attempts = 0;
    const conflicts = [];
    let result;
    try {
      result = await executeTransactionWithRecovery(async (session) => {
        attempts++;
        if (attempts === 1) {
          // Another client's open transaction has written the same account first.
          const other = await mongoose.startSession();
          other.startTransaction();
          await Account.updateOne({ _id: account._id }, { $inc: { balance: 1 } }, { session: other });
          try {
            await Account.updateOne({ _id: account._id }, { $inc: { balance: -100 } }, { session });
            return 'no conflict';
          } catch (error) {
            conflicts.push(error);
            throw error;
          } finally {
            await other.abortTransaction();
            await other.endSession();
          }
        }
        await Account.updateOne({ _id: account._id }, { $inc: { balance: -100 } }, { session });
        return 'done';
      }, { maxRetries: 2, baseDelay: 10 });
    } finally {
      logs.mock.restore();
    }
    assert.equal(conflicts.length, 1, 'the second writer must get a write conflict');
    assert.equal(conflicts[0].code, 112);
    assert.equal(conflicts[0].codeName, 'WriteConflict');
    assert.ok(hasLabel(conflicts[0], 'TransientTransactionError'));
    assert.equal(result, 'done');
    assert.equal(attempts, 2);
    assert.equal((await Account.findById(account._id).lean()).balance, 400);
  });

  it('a validation error breaks categorizeError (no hasErrorLabel): rethrown after the retries', async () => {
    // A mongoose ValidationError has no hasErrorLabel(), so categorizeError throws a TypeError
    // before the transaction is aborted; endSession() in the finally block aborts it instead.
    const errors = mock.method(console, 'error', () => {});
    let attempts = 0;
    let retried = 0;
    let failed = 0;
    const before = await Order.countDocuments();
    try {
      await assert.rejects(
        executeTransactionWithRecovery(async (session) => {
          attempts++;
          await AuditLog.create([{ action: 'order_attempt', timestamp: new Date() }], { session });
          // `userId` is required: mongoose rejects the order before sending it.
          await Order.create([{ status: 'pending' }], { session });
        }, {
          maxRetries: 1,
          baseDelay: 5,
          onRetry: () => { retried++; },
          onError: () => { failed++; },
        }),
        { name: 'TypeError', message: /hasErrorLabel is not a function/ },
      );
    } finally {
      errors.mock.restore();
    }
    assert.equal(attempts, 2);
    assert.equal(retried, 1);
    assert.equal(failed, 1);
    assert.equal(await Order.countDocuments(), before);
    assert.equal(await AuditLog.countDocuments({ action: 'order_attempt' }), 0);
  });

  it('a fatal server error (duplicate key) aborts, is retried by the outer loop, then rethrown', async () => {
    await User.create([{ name: 'Taken', email: 'taken@example.com' }]);
    const errors = mock.method(console, 'error', () => {});
    let attempts = 0;
    let failed = 0;
    try {
      await assert.rejects(
        executeTransactionWithRecovery(async (session) => {
          attempts++;
          await AuditLog.create([{ action: 'signup_attempt', timestamp: new Date() }], { session });
          await User.create([{ name: 'Again', email: 'taken@example.com' }], { session });
        }, { maxRetries: 1, baseDelay: 5, onError: () => { failed++; } }),
        (error) => {
          assert.equal(error.code, 11000, String(error));
          assert.equal(error.hasErrorLabel('TransientTransactionError'), false);
          return true;
        },
      );
    } finally {
      errors.mock.restore();
    }
    assert.equal(attempts, 2);
    assert.equal(failed, 1);
    assert.equal(await User.countDocuments({ email: 'taken@example.com' }), 1);
    assert.equal(await AuditLog.countDocuments({ action: 'signup_attempt' }), 0);
  });

  it('the usage example processes an order through the recovery wrapper', async () => {
    const [buyer] = await User.create([{ name: 'Recovered' }]);
    const [product] = await Product.create([{ name: 'Lamp', price: 30, stock: 6 }]);
    const userId = buyer._id;
    const items = [{ productId: product._id, quantity: 2 }];
    const orderResult = await executeTransactionWithRecovery(
      async (session) => {
        return await processOrder(userId, items, session);
      },
      {
        maxRetries: 5,
        onRetry: (error, context) => {
          console.log(`Retrying order processing: ${error.message}`);
        },
        onError: (error, context) => {
          console.error(`Order processing failed after ${context.retryCount} retries:`, error);
        },
        verificationQuery: async () => {
          return await Order.findOne({ userId, status: 'pending' }).sort({ createdAt: -1 });
        }
      }
    );
    assert.equal(orderResult.totalAmount, 60);
    assert.equal(await stockOf(product._id), 4);
    assert.equal(await Order.countDocuments({ userId }), 1);
  });
});

describe('best practices', () => {
  it('transferFunds moves money between two accounts', async () => {
    const [from, to] = await Account.create([
      { accountType: 'checking', balance: 1000 },
      { accountType: 'checking', balance: 500 },
    ]);
    await transferFunds(from._id, to._id, 200);
    assert.equal((await Account.findById(from._id).lean()).balance, 800);
    assert.equal((await Account.findById(to._id).lean()).balance, 700);

    await assert.rejects(transferFunds(from._id, to._id, 5000), { message: 'Insufficient funds' });
    assert.equal((await Account.findById(from._id).lean()).balance, 800);
    assert.equal((await Account.findById(to._id).lean()).balance, 700);
  });

  it('bulkOrderProcessing batches inventory updates and order creation', async () => {
    const [user] = await User.create([{ name: 'Wholesaler' }]);
    const [pen, pad] = await Product.create([
      { name: 'Pen', price: 2, stock: 100 },
      { name: 'Pad', price: 5, stock: 50 },
    ]);
    await bulkOrderProcessing([
      { userId: user._id, items: [{ productId: pen._id, name: 'Pen', price: 2, quantity: 10 }], totalAmount: 20 },
      {
        userId: user._id,
        items: [
          { productId: pad._id, name: 'Pad', price: 5, quantity: 4 },
          { productId: pen._id, name: 'Pen', price: 2, quantity: 5 },
        ],
        totalAmount: 30,
      },
    ]);
    assert.equal(await stockOf(pen._id), 85);
    assert.equal(await stockOf(pad._id), 46);
    const orders = await Order.find({ userId: user._id }).sort({ totalAmount: 1 }).lean();
    assert.deepEqual(orders.map((o) => [o.totalAmount, o.status]), [[20, 'confirmed'], [30, 'confirmed']]);

    // One invalid order (no userId) aborts the whole batch, inventory updates included.
    await assert.rejects(
      bulkOrderProcessing([
        { userId: user._id, items: [{ productId: pen._id, quantity: 1 }], totalAmount: 2 },
        { items: [{ productId: pad._id, quantity: 1 }], totalAmount: 5 },
      ]),
      { name: 'ValidationError' },
    );
    assert.equal(await stockOf(pen._id), 85);
    assert.equal(await stockOf(pad._id), 46);
    assert.equal(await Order.countDocuments({ userId: user._id }), 2);
  });
});

describe('common pitfalls', () => {
  it('forgetting the session: the write outside the session is not rolled back', async () => {
    const orders = await Order.countDocuments();
    await brokenTransaction();
    // The order (its userId 'someId' is no ObjectId) failed and the transaction was aborted, but
    // the user created without the session had been committed on its own.
    assert.equal(await User.countDocuments({ name: 'John' }), 1);
    assert.equal(await Order.countDocuments(), orders);
  });

  it('forgetting the session, server-side abort: only the session write is undone', async () => {
    const session = await mongoose.startSession();
    session.startTransaction();
    await User.create({ name: 'Jane' });
    const inside = await Order.create([{ userId: new mongoose.Types.ObjectId() }], { session });
    // Isolation: outside the session the uncommitted order is invisible.
    assert.equal(await Order.findById(inside[0]._id), null);
    await session.abortTransaction();
    await session.endSession();
    assert.equal(await User.countDocuments({ name: 'Jane' }), 1);
    assert.equal(await Order.findById(inside[0]._id), null);
  });

  it('correctTransaction commits both writes', async () => {
    const before = await User.countDocuments({ name: 'John' });
    await correctTransaction();
    assert.equal(await User.countDocuments({ name: 'John' }), before + 1);
    const johns = await User.find({ name: 'John' }).select('_id').lean();
    assert.equal(await Order.countDocuments({ userId: { $in: johns.map((j) => j._id) } }), 1);
  });

  it('the nested transaction attempt rolls back the outer session', async () => {
    const orders = await Order.countDocuments();
    await nestedTransactionProblem();
    assert.equal(await User.countDocuments({ name: 'User1' }), 0);
    assert.equal(await Order.countDocuments(), orders);
  });

  it('a second session is independent: its commit survives the abort of the first', async () => {
    const session1 = await mongoose.startSession();
    session1.startTransaction();
    await User.create([{ name: 'Outer' }], { session: session1 });
    const session2 = await mongoose.startSession();
    session2.startTransaction();
    const [order] = await Order.create([{ userId: new mongoose.Types.ObjectId() }], { session: session2 });
    await session2.commitTransaction();
    await session1.abortTransaction();
    await session1.endSession();
    await session2.endSession();
    assert.equal(await User.countDocuments({ name: 'Outer' }), 0);
    assert.notEqual(await Order.findById(order._id), null);
  });

  it('singleSessionCorrect commits the user and its order', async () => {
    await singleSessionCorrect();
    const user = await User.findOne({ name: 'User1' }).lean();
    assert.notEqual(user, null);
    assert.equal(await Order.countDocuments({ userId: user._id }), 1);
  });
});

describe('testing transaction logic (TransactionTestUtils)', () => {
  it('testOrderProcessingTransaction runs without error and leaves consistent data', async () => {
    const logs = mock.method(console, 'log', () => {});
    const errors = mock.method(console, 'error', () => {});
    try {
      await testOrderProcessingTransaction();
    } finally {
      logs.mock.restore();
      errors.mock.restore();
    }
    const failures = errors.mock.calls.map((c) => c.arguments.map(String).join(' '));
    assert.deepEqual(failures, []);
    const report = logs.mock.calls.find((c) => c.arguments[0] === 'Consistency check results:');
    assert.ok(report, 'the consistency report was printed');
    const consistency = report.arguments[1];
    for (const name of ['orderCreated', 'stockReduced', 'userUpdated']) {
      assert.ok(consistency[name] && !consistency[name].error, `${name}: ${JSON.stringify(consistency[name])}`);
    }
    // The environment was recreated from an empty database: one product sold twice.
    const product = await Product.findOne({ name: 'Test Product' }).lean();
    assert.equal(product.stock, 8);
    const user = await User.findOne({ email: 'test@example.com' }).lean();
    assert.equal(user.orderHistory.length, 2);
    assert.equal(user.totalSpent, 200);
    assert.equal(await Order.countDocuments({ userId: user._id }), 2);
  });
});
