'use strict';
// Authentication and TLS through the MongoDB Node.js driver and Mongoose (issue #12), against
// the auth-enabled server scripts/client-tests starts (--auth --tlsMode preferTLS), named by
// FOLIO_AUTH_HOST, with its certificate's CA in FOLIO_TLS_CA_FILE. The first user is created
// through the localhost exception unless another suite already did.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { MongoClient, MongoServerError } = require('mongodb');
const mongoose = require('mongoose');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { promisify } = require('node:util');

const MONGOSH = path.join(__dirname, '..', 'node_modules', '.bin', 'mongosh');

const HOST = process.env.FOLIO_AUTH_HOST;
const CA_FILE = process.env.FOLIO_TLS_CA_FILE;
const ADMIN_PASSWORD = 'folio-admin-pw';
const DB = 'folio_node_auth';

function uri({ user, password, tls = true, params = {} } = {}) {
  const creds = user ? `${encodeURIComponent(user)}:${encodeURIComponent(password)}@` : '';
  const query = new URLSearchParams({ directConnection: 'true', ...params });
  if (tls) {
    query.set('tls', 'true');
    query.set('tlsCAFile', CA_FILE);
  }
  return `mongodb://${creds}${HOST}/${DB}?${query}`;
}

async function withClient(options, f) {
  const client = new MongoClient(uri(options), { serverSelectionTimeoutMS: 10000 });
  try {
    await client.connect();
    return await f(client);
  } finally {
    await client.close();
  }
}

describe('authentication and TLS', { skip: !HOST || !CA_FILE ? 'FOLIO_AUTH_HOST / FOLIO_TLS_CA_FILE not set (scripts/client-tests sets them)' : false }, () => {
  let admin;

  before(async () => {
    await withClient({}, async (c) => {
      try {
        await c.db('admin').command({ createUser: 'admin', pwd: ADMIN_PASSWORD, roles: ['root'] });
      } catch (e) {
        // 13: the localhost exception is over; another suite created the first user.
        assert.equal(e.code, 13, e.message);
      }
    });
    admin = new MongoClient(uri({ user: 'admin', password: ADMIN_PASSWORD, params: { authSource: 'admin' } }));
    await admin.connect();
    // Leftovers of an earlier run against the same server.
    for (const [db, user] of [['admin', 'node_writer'], [DB, 'node_reader']]) {
      await admin.db(db).command({ dropUser: user }).catch((e) => assert.equal(e.code, 11));
    }
    await admin.db('admin').command({
      createUser: 'node_writer', pwd: 'n0de:pw@', roles: [{ role: 'readWrite', db: DB }]
    });
    await admin.db(DB).command({ createUser: 'node_reader', pwd: 'reader', roles: ['read'] });
    await admin.db(DB).dropDatabase();
    await admin.db(DB).collection('orders').insertOne({ _id: 0, total: 1 });
  });

  after(async () => {
    await admin?.close();
  });

  for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1']) {
    for (const tls of [true, false]) {
      it(`driver: user:pass URI with ${mechanism}, tls=${tls}`, async () => {
        await withClient({
          user: 'node_writer', password: 'n0de:pw@', tls,
          params: { authSource: 'admin', authMechanism: mechanism }
        }, async (c) => {
          const orders = c.db(DB).collection('orders');
          await orders.insertOne({ mechanism, tls });
          assert.equal(await orders.countDocuments({ mechanism, tls }), 1);
          const status = await c.db('admin').command({ connectionStatus: 1 });
          assert.deepEqual(status.authInfo.authenticatedUsers, [{ user: 'node_writer', db: 'admin' }]);
        });
      });
    }

    it(`mongoose: connects with ${mechanism} over TLS and saves a document`, async () => {
      const conn = await mongoose.createConnection(uri({
        user: 'node_writer', password: 'n0de:pw@', params: { authSource: 'admin', authMechanism: mechanism }
      }), { serverSelectionTimeoutMS: 10000 }).asPromise();
      try {
        const Order = conn.model('Order', new mongoose.Schema({ total: Number, via: String }), 'orders');
        await Order.create({ total: 3, via: mechanism });
        const found = await Order.findOne({ via: mechanism }).lean();
        assert.equal(found.total, 3);
      } finally {
        await conn.close();
      }
    });
  }

  for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1']) {
    it(`mongosh: --eval with ${mechanism} over TLS`, async () => {
      const target = uri({
        user: 'node_writer', password: 'n0de:pw@', params: { authSource: 'admin', authMechanism: mechanism }
      });
      const script = 'const s = db.runCommand({connectionStatus: 1}); ' +
        'print(JSON.stringify({users: s.authInfo.authenticatedUsers, n: db.orders.countDocuments({_id: 0})}))';
      const { stdout } = await promisify(execFile)(MONGOSH, [target, '--quiet', '--norc', '--eval', script],
        { timeout: 60000, env: { ...process.env, MONGOSH_NO_UPDATE_CHECK: '1' } });
      const out = JSON.parse(stdout.trim().split('\n').pop());
      assert.deepEqual(out, { users: [{ user: 'node_writer', db: 'admin' }], n: 1 });
    });
  }

  it('mongosh: a wrong password is refused', async () => {
    const target = uri({ user: 'node_writer', password: 'wrong', params: { authSource: 'admin' } });
    await assert.rejects(
      promisify(execFile)(MONGOSH, [target, '--quiet', '--norc', '--eval', 'db.runCommand({ping: 1})'],
        { timeout: 60000 }),
      (e) => /Authentication failed/.test(`${e.stdout}${e.stderr}`)
    );
  });

  it('a wrong password fails with AuthenticationFailed (18)', async () => {
    for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1']) {
      const client = new MongoClient(uri({
        user: 'node_writer', password: 'wrong', params: { authSource: 'admin', authMechanism: mechanism }
      }), { serverSelectionTimeoutMS: 10000 });
      await assert.rejects(client.connect(), (e) => {
        const cause = e.cause ?? e;
        assert.equal(cause.code, 18, e.message);
        return true;
      });
      await client.close();
    }
  });

  it('unauthenticated commands are Unauthorized (13), ping is not', async () => {
    await withClient({}, async (c) => {
      await c.db('admin').command({ ping: 1 });
      await assert.rejects(c.db(DB).collection('orders').findOne({}), (e) => {
        assert.ok(e instanceof MongoServerError);
        assert.equal(e.code, 13);
        assert.match(e.message, /requires authentication/);
        return true;
      });
    });
  });

  it('a read user cannot write; a readWrite user stays in its database', async () => {
    await withClient({ user: 'node_reader', password: 'reader' }, async (c) => {
      assert.ok(await c.db(DB).collection('orders').findOne({ _id: 0 }));
      await assert.rejects(c.db(DB).collection('orders').insertOne({ x: 1 }), (e) => e.code === 13);
    });
    await withClient({ user: 'node_writer', password: 'n0de:pw@', params: { authSource: 'admin' } }, async (c) => {
      await assert.rejects(c.db('folio_node_other').collection('t').insertOne({ x: 1 }), (e) => e.code === 13);
      await assert.rejects(c.db(DB).command({ dropUser: 'node_reader' }), (e) => e.code === 13);
    });
  });
});
