'use strict';
// Change streams through mongoose: `Model.watch()` with `fullDocument: 'updateLookup'` receives
// an update event carrying the document as it is after the update.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const mongoose = require('mongoose');

const { connectMongoose, sleep } = require('../lib/connect');

const DB = 'folio_node_change_streams';

const Counter = mongoose.model(
  'StreamCounter',
  new mongoose.Schema({ name: String, value: Number }),
);

describe('Model.watch()', () => {
  before(async () => {
    await connectMongoose(DB);
  });

  after(async () => {
    await mongoose.disconnect();
  });

  it('receives an update with fullDocument: updateLookup', async () => {
    const doc = await Counter.create({ name: 'hits', value: 0 });
    const stream = Counter.watch([], { fullDocument: 'updateLookup' });
    try {
      const change = new Promise((resolve, reject) => {
        stream.on('change', resolve);
        stream.on('error', reject);
      });
      // The stream opens in the background: keep updating until it has seen one (each update
      // is a new event, so nothing depends on when it started).
      let received = null;
      change.then((c) => { received = c; });
      for (let i = 1; i <= 50 && received === null; i++) {
        await Counter.updateOne({ _id: doc._id }, { $inc: { value: 1 } });
        await sleep(100);
      }
      const event = await change;
      assert.equal(event.operationType, 'update');
      assert.equal(String(event.documentKey._id), String(doc._id));
      assert.ok(event.updateDescription.updatedFields.value >= 1);
      assert.equal(event.fullDocument.name, 'hits');
      assert.equal(typeof event.fullDocument.value, 'number');
      assert.ok(event.fullDocument.value >= event.updateDescription.updatedFields.value);
      assert.ok(event._id && typeof event._id._data === 'string');
    } finally {
      await stream.close();
    }
  });
});
