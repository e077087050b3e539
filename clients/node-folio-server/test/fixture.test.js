'use strict';
// The wrapper as a test suite uses it: create a server, run a Mongoose transaction against
// getUri(), stop it, and check the server process is gone.

const test = require('node:test');
const assert = require('node:assert/strict');
const mongoose = require('mongoose');
const { MongoMemoryReplSet, FolioMemoryReplSet } = require('..');

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid) {
  for (let i = 0; i < 200 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

test('a Mongoose transaction against MongoMemoryReplSet.create()', async () => {
  const replSet = await MongoMemoryReplSet.create({ replSet: { name: 'testset' } });
  assert.ok(replSet instanceof FolioMemoryReplSet);
  const uri = replSet.getUri('bank');
  assert.match(uri, /^mongodb:\/\/127\.0\.0\.1:\d+\/bank\?replicaSet=testset$/);
  assert.equal(replSet.getUri(), uri.replace('/bank?', '/?'));

  const conn = await mongoose.createConnection(uri).asPromise();
  try {
    const Account = conn.model('Account', new mongoose.Schema({ _id: String, balance: Number }));
    await Account.createCollection();
    await Account.create([{ _id: 'alice', balance: 100 }, { _id: 'bob', balance: 0 }]);

    await conn.transaction(async (session) => {
      await Account.updateOne({ _id: 'alice' }, { $inc: { balance: -30 } }, { session });
      await Account.updateOne({ _id: 'bob' }, { $inc: { balance: 30 } }, { session });
    });
    // An aborted transaction leaves nothing behind.
    await assert.rejects(
      conn.transaction(async (session) => {
        await Account.updateOne({ _id: 'alice' }, { $inc: { balance: -1000 } }, { session });
        throw new Error('insufficient funds');
      }),
      /insufficient funds/,
    );
    const balances = Object.fromEntries(
      (await Account.find().sort({ _id: 1 }).lean()).map((a) => [a._id, a.balance]),
    );
    assert.deepEqual(balances, { alice: 70, bob: 30 });
  } finally {
    await conn.close();
  }

  const pid = replSet.process.pid;
  assert.ok(alive(pid));
  await replSet.stop();
  assert.ok(await waitGone(pid), 'the server exited');
  assert.throws(() => replSet.getUri(), /not running/);
});

test('the server exits when its parent dies without calling stop()', async () => {
  const { spawn } = require('node:child_process');
  // A child Node process starts a server and then dies abruptly.
  const script = `
    const { MongoMemoryReplSet } = require(${JSON.stringify(require.resolve('..'))});
    MongoMemoryReplSet.create().then((s) => { console.log(s.process.pid); process.exit(0); });
  `;
  const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  parent.stdout.on('data', (c) => (out += c));
  await new Promise((resolve) => parent.once('exit', resolve));
  const pid = Number(out.trim());
  assert.ok(pid > 0, `the child printed the server's pid: ${out}`);
  assert.ok(await waitGone(pid), 'the orphaned server stopped on its own');
});

test('options Folio cannot honour are refused, not ignored', async () => {
  await assert.rejects(MongoMemoryReplSet.create({ replSet: { count: 3 } }), /count must be 1/);
  await assert.rejects(MongoMemoryReplSet.create({ binary: { version: '7.0.0' } }), /binary must be the path/);
  await assert.rejects(MongoMemoryReplSet.create({ autoStart: false }), /unsupported option autoStart/);
  const ok = await MongoMemoryReplSet.create({ replSet: { count: 1, storageEngine: 'wiredTiger' } });
  assert.match(ok.getUri(), /replicaSet=rs0$/);
  await ok.stop();
});

test('a missing binary is a clear error', async () => {
  await assert.rejects(
    MongoMemoryReplSet.create({ binary: '/nonexistent/folio' }),
    /cannot start \/nonexistent\/folio/,
  );
});
