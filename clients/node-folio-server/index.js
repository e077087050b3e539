'use strict';
// folio-memory-server: starts a Folio server for a test run and stops it afterwards, with the API
// of mongodb-memory-server's MongoMemoryReplSet (create, getUri, stop), so a test suite switches
// by changing its require line.
//
// The server runs in memory on a port the system chooses (`folio serve --in-memory --port 0`),
// announces itself with a JSON ready line on stdout ({"ready":true,"uri":...,"port":...,"pid":...})
// and is started with --exit-on-stdin-close: if this process dies without calling stop(), the
// pipe closes and the server exits too, so no server is ever left behind.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

/**
 * Finds the folio binary: `opts.binary`, then $FOLIO_BIN, then a cargo build
 * ($CARGO_TARGET_DIR/release/folio, or target/release/folio in this directory or a parent of it,
 * starting from the working directory and from this package).
 */
function findBinary(explicit) {
  if (explicit) return explicit;
  if (process.env.FOLIO_BIN) return process.env.FOLIO_BIN;
  const candidates = [];
  if (process.env.CARGO_TARGET_DIR) {
    candidates.push(path.join(process.env.CARGO_TARGET_DIR, 'release', 'folio'));
  }
  for (const start of [process.cwd(), __dirname]) {
    let dir = path.resolve(start);
    for (;;) {
      candidates.push(path.join(dir, 'target', 'release', 'folio'));
      const parent = path.dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
  }
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) {
    throw new Error(
      'folio-memory-server: no folio binary found; set FOLIO_BIN or build one with ' +
        '`cargo build --release -p folio-cli` (looked in: ' + candidates.slice(0, 3).join(', ') + ', ...)',
    );
  }
  return found;
}

/** Throws if `obj` has a key outside `known`: an option this wrapper cannot honour is refused. */
function checkKeys(obj, known, where) {
  for (const key of Object.keys(obj || {})) {
    if (!known.includes(key)) {
      throw new Error(`folio-memory-server: unsupported option ${where}${key} (supported: ${known.join(', ')})`);
    }
  }
}

/** Validates create()'s options against what Folio can do. */
function checkOptions(opts) {
  checkKeys(opts, ['binary', 'replSet', 'instanceOpts', 'startTimeoutMS'], '');
  if (opts.binary !== undefined && typeof opts.binary !== 'string') {
    throw new Error('folio-memory-server: binary must be the path of a folio binary (no download options)');
  }
  const replSet = opts.replSet || {};
  checkKeys(replSet, ['name', 'count', 'storageEngine'], 'replSet.');
  if (replSet.count !== undefined && replSet.count !== 1) {
    throw new Error('folio-memory-server: replSet.count must be 1 (Folio is a one-member replica set)');
  }
  // Folio has one storage engine; the engines mongodb-memory-server offers all run transactions.
  if (replSet.storageEngine !== undefined && !['wiredTiger', 'ephemeralForTest'].includes(replSet.storageEngine)) {
    throw new Error(`folio-memory-server: unknown replSet.storageEngine ${replSet.storageEngine}`);
  }
  const instances = opts.instanceOpts || [];
  if (!Array.isArray(instances) || instances.length > 1) {
    throw new Error('folio-memory-server: instanceOpts takes at most one instance');
  }
  for (const instance of instances) checkKeys(instance, ['port', 'dbPath', 'args'], 'instanceOpts[0].');
}

/** A running (or stopped) Folio server presenting itself as a one-member replica set. */
class FolioMemoryReplSet {
  /**
   * @param {object} [opts]
   * @param {string} [opts.binary] the folio binary (default: $FOLIO_BIN or a cargo build)
   * @param {{name?: string, count?: 1, storageEngine?: string}} [opts.replSet] the replica set
 *   name (default `rs0`); `count` may only be 1; `storageEngine` `wiredTiger` or
 *   `ephemeralForTest` (Folio's engine runs either way)
   * @param {Array<{port?: number, dbPath?: string, args?: string[]}>} [opts.instanceOpts]
   *   the first entry's port (default: chosen by the system), data directory (default: in
   *   memory) and extra `folio serve` flags
   * @param {number} [opts.startTimeoutMS] how long to wait for the ready line (default 30000)
   */
  constructor(opts = {}) {
    checkOptions(opts);
    this.opts = opts;
    this.process = null;
    this.port = null;
    this.uri = null;
    this.state = 'new';
  }

  /** Creates and starts a server: `await FolioMemoryReplSet.create()`. */
  static async create(opts = {}) {
    const server = new FolioMemoryReplSet(opts);
    await server.start();
    return server;
  }

  /** Starts the server and resolves once it accepts connections. */
  async start() {
    if (this.state === 'running') throw new Error('folio-memory-server: already running');
    const binary = findBinary(this.opts.binary);
    const instance = (this.opts.instanceOpts && this.opts.instanceOpts[0]) || {};
    const replSet = (this.opts.replSet && this.opts.replSet.name) || 'rs0';
    const args = ['serve', '--port', String(instance.port || 0), '--replSet', replSet, '--exit-on-stdin-close'];
    if (instance.dbPath) args.push('--dbpath', instance.dbPath);
    else args.push('--in-memory');
    args.push(...(instance.args || []));

    const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.process = child;
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr = (stderr + chunk).slice(-4000);
    });
    const timeoutMS = this.opts.startTimeoutMS || 30000;
    const ready = await new Promise((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout });
      const fail = (why) => {
        clearTimeout(timer);
        lines.close();
        child.kill('SIGKILL');
        reject(new Error(`folio-memory-server: ${why}${stderr ? `; its output:\n${stderr}` : ''}`));
      };
      const timer = setTimeout(() => fail(`no ready line within ${timeoutMS} ms`), timeoutMS);
      child.once('error', (e) => fail(`cannot start ${binary}: ${e.message}`));
      child.once('exit', (code, signal) => fail(`the server exited before it was ready (${signal || code})`));
      lines.on('line', (line) => {
        if (!line.startsWith('{')) return;
        let parsed;
        try {
          parsed = JSON.parse(line);
        } catch {
          return;
        }
        if (parsed.ready) {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          child.removeAllListeners('error');
          lines.close();
          resolve(parsed);
        }
      });
    });
    this.port = ready.port;
    this.uri = ready.uri;
    this.state = 'running';
    // The test run's end must not wait for the server: unreference it (the closed stdin pipe
    // still stops it when this process exits).
    child.stdout.resume();
    for (const stream of [child.stdin, child.stdout, child.stderr]) stream.unref && stream.unref();
    child.unref();
  }

  /**
   * The connection string, optionally naming a database:
   * `mongodb://127.0.0.1:PORT/DB?replicaSet=rs0`.
   */
  getUri(dbName) {
    if (this.state !== 'running') throw new Error('folio-memory-server: the server is not running');
    const url = new URL(this.uri);
    url.pathname = `/${dbName || ''}`;
    return url.toString();
  }

  /** Stops the server (SIGTERM, then SIGKILL after 10 s) and resolves once it has exited. */
  async stop() {
    const child = this.process;
    if (!child || this.state !== 'running') return true;
    this.state = 'stopped';
    if (child.exitCode !== null || child.signalCode !== null) return true;
    await new Promise((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 10000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
    return true;
  }
}

module.exports = {
  FolioMemoryReplSet,
  // The name mongodb-memory-server users import.
  MongoMemoryReplSet: FolioMemoryReplSet,
  findBinary,
};
