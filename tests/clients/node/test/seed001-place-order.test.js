'use strict';
// "Atomic Transactions & Rollbacks in MongoDB with Mongoose": the place-order route without a
// transaction, with a managed transaction (`withTransaction()`) and with a manual one. The third
// database operation (creating the order) is made to fail, and the first two must be rolled back.
// The article elides the request parsing, the payment/stock check and the response; those parts
// are filled in minimally, the database operations are the article's.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const mongoose = require('mongoose');
const { startSession } = require('mongoose');

const { connectMongoose } = require('../lib/connect');

const DB = 'folio_node_seed001';

const UserModel = mongoose.model('User', new mongoose.Schema({
  name: String,
  shippingAddress: String,
  lifeTimeValue: { type: Number, default: 0 },
}));

const ProductModel = mongoose.model('Product', new mongoose.Schema({
  name: String,
  price: Number,
  quantity: Number,
}));

const OrderModel = mongoose.model('Order', new mongoose.Schema({
  user: { type: mongoose.ObjectId, required: true },
  product: { type: mongoose.ObjectId, required: true },
  quantity: { type: Number, required: true },
  billingAmount: Number,
  shippingAddress: String,
}));

/** What the route's middleware and request parsing hand to the handler. */
async function requestData(req) {
  const user = req.user;
  const { productId, orderProductQuantity, shippingAddress } = req.body;
  const product = await ProductModel.findById(productId);
  if (!product || product.quantity < orderProductQuantity) {
    throw new Error('Insufficient stock');
  }
  const billingAmount = product.price * orderProductQuantity;
  const orderDetails = {
    user: user._id,
    product: product._id,
    quantity: orderProductQuantity,
    billingAmount,
    shippingAddress,
    // The test's way of making DB operation 3 fail.
    ...req.body.orderOverrides,
  };
  return { user, product, orderProductQuantity, shippingAddress, billingAmount, orderDetails };
}

// The route as the article first writes it, without a transaction.
async function placeOrderWithoutTransaction(req, res) {
  try {
    // Data from Request & Middleware
    // Verify Payment & Product Stock
    const { user, product, orderProductQuantity, shippingAddress, billingAmount, orderDetails } =
      await requestData(req);
    // ✅ Update User - DB Operation 1
    user.shippingAddress = shippingAddress;
    user.lifeTimeValue += billingAmount;
    await user.save();
    // ✅ Update Product Stock - DB Operation 2
    product.quantity -= orderProductQuantity;
    await product.save();
    // ❌ Create Order - DB Operation 3
    const newOrder = new OrderModel({ ...orderDetails });
    await newOrder.save();
    // Respond back to client
    res.status(201).json({ orderId: newOrder._id });
  } catch (error) {
    // Error Handling
    res.status(500).json({ message: error.message });
  }
}

// The route with a managed transaction.
async function placeOrderManaged(req, res) {
  try {
    // Data from Request & Middleware
    // Verify Payment & Product Stock
    const { user, product, orderProductQuantity, shippingAddress, billingAmount, orderDetails } =
      await requestData(req);
    const session = await startSession();
    let isTransactionSuccessful = false;
    let transactionErrorMessage = '';
    try {
      await session.withTransaction(async () => {
        // DB Operation 1 - Update User
        user.shippingAddress = shippingAddress;
        user.lifeTimeValue += billingAmount;
        await user.save({ session }); // All operations use the same session
        // DB Operation 2 - Update Product Stock
        product.quantity -= orderProductQuantity;
        await product.save({ session }); // All operations use the same session
        // DB Operation 3 - Create Order
        const newOrder = new OrderModel({ ...orderDetails });
        await newOrder.save({ session }); // All operations use the same session
        isTransactionSuccessful = true;
      });
    } catch (error) {
      // Error Handling - transactionErrorMessage
      transactionErrorMessage = error.message;
    } finally {
      await session.endSession();
    }
    // Respond back to client - isTransactionSuccessful, transactionErrorMessage
    res.status(isTransactionSuccessful ? 201 : 500).json({ isTransactionSuccessful, transactionErrorMessage });
  } catch (error) {
    // Error Handling
    res.status(500).json({ message: error.message });
  }
}

// The route with a manual transaction.
async function placeOrderManual(req, res) {
  const session = await startSession();
  try {
    // Start Transaction Session
    session.startTransaction();
    // Data from Request & Middleware
    // Verify Payment & Product Stock
    const { user, product, orderProductQuantity, shippingAddress, billingAmount, orderDetails } =
      await requestData(req);
    // DB Operation 1 - Update User
    user.shippingAddress = shippingAddress;
    user.lifeTimeValue += billingAmount;
    await user.save({ session }); // All operations use the same session
    // DB Operation 2 - Update Product Stock
    product.quantity -= orderProductQuantity;
    await product.save({ session }); // All operations use the same session
    // DB Operation 3 - Create Order
    const newOrder = new OrderModel({ ...orderDetails });
    await newOrder.save({ session }); // All operations use the same session
    // All DB Operations Successful - Commit Transaction
    await session.commitTransaction();
    // Respond back to client - isTransactionSuccessful, transactionErrorMessage
    res.status(201).json({ isTransactionSuccessful: true, orderId: newOrder._id });
  } catch (error) {
    // One or Few DB Operations Failed - Abort Transaction (Rollback)
    await session.abortTransaction();
    // Error Handling
    res.status(500).json({ isTransactionSuccessful: false, transactionErrorMessage: error.message });
  }
}

/** Calls a route handler with a request, returning the recorded response. */
async function call(handler, req) {
  const res = {
    statusCode: 200,
    body: undefined,
    status(code) { this.statusCode = code; return this; },
    json(body) { this.body = body; return this; },
  };
  await handler(req, res);
  return res;
}

/** A fresh customer and console, and a request for `quantity` consoles. */
async function scenario(quantity, orderOverrides = {}) {
  const [customer] = await UserModel.create([{ name: 'Gamer', shippingAddress: 'old address', lifeTimeValue: 100 }]);
  const [product] = await ProductModel.create([{ name: 'Retro Handheld', price: 60, quantity: 10 }]);
  const req = {
    user: await UserModel.findById(customer._id), // as validateUserToken would load it
    body: { productId: product._id, orderProductQuantity: quantity, shippingAddress: '1 New Street', orderOverrides },
  };
  return { customerId: customer._id, productId: product._id, req };
}

/** The stored state of one scenario. */
async function state({ customerId, productId }) {
  const user = await UserModel.findById(customerId).lean();
  const product = await ProductModel.findById(productId).lean();
  const orders = await OrderModel.find({ user: customerId }).lean();
  return { shippingAddress: user.shippingAddress, lifeTimeValue: user.lifeTimeValue, stock: product.quantity, orders };
}

before(async () => {
  await connectMongoose(DB);
});

after(async () => {
  await mongoose.disconnect();
});

/** Makes DB operation 3 fail on the server: the order's _id is already taken. */
async function duplicateOrderId() {
  const [existing] = await OrderModel.create([{ user: new mongoose.Types.ObjectId(), product: new mongoose.Types.ObjectId(), quantity: 1 }]);
  return { _id: existing._id };
}

/** Makes DB operation 3 fail in the application: a coding error, a quantity that is no number. */
function codingError() {
  return { quantity: 'two' };
}

describe('without a transaction (the problem)', () => {
  it('a failing third operation leaves the first two applied', async () => {
    const s = await scenario(2, await duplicateOrderId());
    const res = await call(placeOrderWithoutTransaction, s.req);
    assert.equal(res.statusCode, 500);
    assert.match(res.body.message, /E11000 duplicate key error/);
    assert.deepEqual(await state(s), { shippingAddress: '1 New Street', lifeTimeValue: 220, stock: 8, orders: [] });
  });
});

for (const [name, handler] of [['managed withTransaction()', placeOrderManaged], ['manual transaction', placeOrderManual]]) {
  describe(`place-order route, ${name}`, () => {
    it('commits the user, the stock and the order together', async () => {
      const s = await scenario(3);
      const res = await call(handler, s.req);
      assert.equal(res.statusCode, 201, JSON.stringify(res.body));
      assert.equal(res.body.isTransactionSuccessful, true);
      const after = await state(s);
      assert.equal(after.shippingAddress, '1 New Street');
      assert.equal(after.lifeTimeValue, 280);
      assert.equal(after.stock, 7);
      assert.equal(after.orders.length, 1);
      assert.equal(after.orders[0].quantity, 3);
      assert.equal(after.orders[0].billingAmount, 180);
    });

    it('a server error in the third operation rolls back the first two', async () => {
      const s = await scenario(2, await duplicateOrderId());
      const res = await call(handler, s.req);
      assert.equal(res.statusCode, 500);
      assert.equal(res.body.isTransactionSuccessful, false);
      assert.match(res.body.transactionErrorMessage, /E11000 duplicate key error/);
      assert.deepEqual(await state(s), { shippingAddress: 'old address', lifeTimeValue: 100, stock: 10, orders: [] });
    });

    it('a coding error in the third operation rolls back the first two', async () => {
      const s = await scenario(2, codingError());
      const res = await call(handler, s.req);
      assert.equal(res.statusCode, 500);
      assert.equal(res.body.isTransactionSuccessful, false);
      assert.match(res.body.transactionErrorMessage, /Order validation failed/);
      assert.deepEqual(await state(s), { shippingAddress: 'old address', lifeTimeValue: 100, stock: 10, orders: [] });
    });
  });
}

describe('the generic snippets', () => {
  it('managed: create and update in one withTransaction()', async () => {
    const [product] = await ProductModel.create([{ name: 'Cartridge', price: 20, quantity: 5 }]);
    const session = await mongoose.startSession();
    await session.withTransaction(async () => {
      // Your operations here with { session }
      await UserModel.create([{ name: 'Snippet' }], { session });
      await ProductModel.updateOne({ _id: product._id }, { $inc: { quantity: -1 } }, { session });
    });
    session.endSession();
    assert.equal(await UserModel.countDocuments({ name: 'Snippet' }), 1);
    assert.equal((await ProductModel.findById(product._id).lean()).quantity, 4);
  });

  it('manual: an error after two writes aborts both', async () => {
    const [product] = await ProductModel.create([{ name: 'Cable', price: 5, quantity: 5 }]);
    const session = await mongoose.startSession();
    await assert.rejects(async () => {
      try {
        // Start Transaction Session
        session.startTransaction();
        // DB Operations
        await UserModel.create([{ name: 'Manual' }], { session });
        await ProductModel.updateOne({ _id: product._id }, { $inc: { quantity: -5 } }, { session });
        throw new Error('payment gateway offline');
        // Commit Transaction (not reached)
      } catch (error) {
        // Abort Transaction - Failure
        await session.abortTransaction();
        throw error;
      } finally {
        // End Transaction Session
        session.endSession();
      }
    }, { message: 'payment gateway offline' });
    assert.equal(await UserModel.countDocuments({ name: 'Manual' }), 0);
    assert.equal((await ProductModel.findById(product._id).lean()).quantity, 5);
  });
});
