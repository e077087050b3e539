'use strict';
// Connection helpers shared by the test files. The seeds leave the connection out; everything
// else in the ported examples is kept as the articles wrote it.

const mongoose = require('mongoose');
const { MongoClient } = require('mongodb');

/** The server under test: a Folio server introducing itself as the replica set `rs0`. */
const FOLIO_URI = process.env.FOLIO_URI || 'mongodb://127.0.0.1:27017/?replicaSet=rs0';

/** Fail fast when no server answers instead of waiting the driver's default 30 s. */
const SELECTION_TIMEOUT_MS = 15000;

/** Drops `dbName` through a plain driver client, so every run starts from nothing. */
async function dropDatabase(dbName) {
  const client = new MongoClient(FOLIO_URI, { serverSelectionTimeoutMS: SELECTION_TIMEOUT_MS });
  try {
    await client.connect();
    await client.db(dbName).dropDatabase();
  } finally {
    await client.close();
  }
}

/**
 * Connects the default mongoose connection to a fresh database `dbName` and waits until every
 * compiled model has created its collection and indexes (mongoose's autoCreate/autoIndex), so an
 * index the server refuses fails here, with the server's message, rather than later and silently.
 */
async function connectMongoose(dbName, options = {}) {
  await dropDatabase(dbName);
  await mongoose.connect(FOLIO_URI, {
    dbName,
    serverSelectionTimeoutMS: SELECTION_TIMEOUT_MS,
    ...options,
  });
  await Promise.all(Object.values(mongoose.connection.models).map((model) => model.init()));
  return mongoose.connection;
}

/** Opens a plain driver client (no mongoose) on the server under test. */
async function connectClient(options = {}) {
  const client = new MongoClient(FOLIO_URI, {
    serverSelectionTimeoutMS: SELECTION_TIMEOUT_MS,
    ...options,
  });
  await client.connect();
  return client;
}

/** Resolves after `ms` milliseconds. */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True when `error` is a driver error carrying the MongoDB error label `label`. */
function hasLabel(error, label) {
  return Boolean(error) && typeof error.hasErrorLabel === 'function' && error.hasErrorLabel(label);
}

module.exports = { FOLIO_URI, connectMongoose, connectClient, dropDatabase, sleep, hasLabel };
