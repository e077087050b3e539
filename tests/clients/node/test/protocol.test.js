'use strict';
// Protocol features the Node.js driver uses: the streaming (awaitable hello) monitor, the
// versioned API with strict mode, and strict command fields.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { MongoClient, MongoServerError } = require('mongodb');

const { FOLIO_URI } = require('../lib/connect');

const DB = 'folio_node_protocol';

describe('protocol', () => {
  it('monitors the server with awaited heartbeats', async () => {
    const client = new MongoClient(FOLIO_URI, { heartbeatFrequencyMS: 500 });
    const awaited = [];
    client.on('serverHeartbeatSucceeded', (e) => awaited.push(e.awaited));
    try {
      await client.connect();
      const deadline = Date.now() + 10000;
      while (!awaited.includes(true) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(awaited.includes(true), `no awaited heartbeat in ${JSON.stringify(awaited)}`);
      assert.equal((await client.db('admin').command({ ping: 1 })).ok, 1);
    } finally {
      await client.close();
    }
  });

  it('runs version 1 commands under apiStrict and refuses the others', async () => {
    const client = new MongoClient(FOLIO_URI, { serverApi: { version: '1', strict: true } });
    try {
      const coll = client.db(DB).collection('api');
      await coll.deleteMany({});
      await coll.insertOne({ _id: 1, k: 'a' });
      assert.deepEqual(await coll.findOne({ _id: 1 }), { _id: 1, k: 'a' });
      await assert.rejects(coll.distinct('k'), (e) => e instanceof MongoServerError && e.code === 323);
    } finally {
      await client.close();
    }
  });

  it('refuses a misspelt option', async () => {
    const client = new MongoClient(FOLIO_URI);
    try {
      await assert.rejects(
        client.db(DB).command({ find: 'api', fliter: { a: 1 } }),
        (e) => e instanceof MongoServerError && e.code === 40415
          && e.message === "BSON field 'find.fliter' is an unknown field.",
      );
    } finally {
      await client.close();
    }
  });
});
