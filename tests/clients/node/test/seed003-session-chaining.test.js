'use strict';
// "Sessions in MongoDB": the lifecycle of a session (start, start a transaction, attach each
// query with `.session(session)`, commit or abort, end), as the article's transfer writes it, and
// the isolation the article promises: other clients see nothing until the commit.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const mongoose = require('mongoose');

const { connectMongoose } = require('../lib/connect');

const DB = 'folio_node_seed003';

const Account = mongoose.model('Account', new mongoose.Schema({
  userId: { type: String, index: { unique: true } },
  balance: Number,
}));

/** Balances by user id, read outside any session. */
async function balances() {
  const accounts = await Account.find().sort({ userId: 1 }).lean();
  return Object.fromEntries(accounts.map((a) => [a.userId, a.balance]));
}

/** The article's steps 1-3: a session, a transaction and the two chained updates. */
async function startTransfer(req, amount) {
  // 1. Start a Session
  const session = await mongoose.startSession();
  // 2. Start a Transaction
  session.startTransaction();
  // 3. Execute Operations Within the Session
  await Account.updateOne(
    { userId: req.userId },
    { $inc: { balance: -amount } }
  ).session(session);

  await Account.updateOne(
    { userId: req.to },
    { $inc: { balance: amount } }
  ).session(session);
  return session;
}

before(async () => {
  await connectMongoose(DB);
});

after(async () => {
  await mongoose.disconnect();
});

describe('the .session(session) transfer', () => {
  before(async () => {
    await Account.create([{ userId: 'alice', balance: 100 }, { userId: 'bob', balance: 20 }]);
  });

  it('commit publishes both updates at once', async () => {
    const req = { userId: 'alice', to: 'bob' };
    const session = await startTransfer(req, 30);
    // Staging area: other clients cannot see the changes, the session reads its own writes.
    assert.deepEqual(await balances(), { alice: 100, bob: 20 });
    const own = await Account.findOne({ userId: 'alice' }).session(session).lean();
    assert.equal(own.balance, 70);
    // 4. Commit or Abort — Commit (Success Path)
    await session.commitTransaction();
    // 5. End the Session
    session.endSession();
    assert.deepEqual(await balances(), { alice: 70, bob: 50 });
  });

  it('abort discards both updates', async () => {
    const session = await startTransfer({ userId: 'bob', to: 'alice' }, 50);
    // Abort (Failure Path)
    await session.abortTransaction();
    session.endSession();
    assert.deepEqual(await balances(), { alice: 70, bob: 50 });
  });

  it('the transaction reads a snapshot: a commit by another client after its start is invisible', async () => {
    const session = await mongoose.startSession();
    session.startTransaction({ readConcern: { level: 'snapshot' } });
    const first = await Account.findOne({ userId: 'bob' }).session(session).lean();
    await Account.updateOne({ userId: 'bob' }, { $inc: { balance: 5 } }); // another client
    const again = await Account.findOne({ userId: 'bob' }).session(session).lean();
    assert.equal(again.balance, first.balance);
    await session.commitTransaction();
    session.endSession();
    assert.equal((await balances()).bob, first.balance + 5);
  });

  it('a session without a transaction runs each operation on its own', async () => {
    const session = await mongoose.startSession();
    await Account.updateOne({ userId: 'alice' }, { $inc: { balance: 1 } }).session(session);
    const read = await Account.findOne({ userId: 'alice' }).session(session).lean();
    session.endSession();
    assert.equal(read.balance, 71);
    assert.equal((await balances()).alice, 71);
  });
});
