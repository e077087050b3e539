//! [`Mvcc`]: snapshot-isolation transactions over a storage [`Engine`].
//!
//! # Timestamps
//!
//! One oracle hands out commit timestamps. A timestamp is a BSON timestamp (seconds, increment);
//! the next one is `(max(now, last.secs), last.inc + 1)`, or `(now, 1)` when the clock has moved
//! past the last second. Commit timestamps therefore strictly increase and follow the wall clock
//! when there is one. The last commit timestamp is written in every commit batch, and `open`
//! reads it back, so time never goes backwards across a restart even if the clock does.
//!
//! # Snapshots and visibility
//!
//! Each version of a key is stored under `(key, commit ts)` (see [`super::keys`]). A transaction
//! reads as of its snapshot timestamp: the newest version `<= snapshot`, where a tombstone means
//! "absent". New transactions take `last_visible` as their snapshot. `last_visible` only moves
//! after a commit batch is fully written, and commit batches are written one at a time in
//! timestamp order, so a snapshot never sees half a commit nor a commit with a hole before it.
//!
//! # Conflicts: first writer wins, at the write
//!
//! A write to a key first takes the key in an in-memory lock table (key → transaction id). If
//! another in-flight transaction holds it, the write fails at once with a [`Conflict`] naming the
//! holder. Having the lock, the write then looks up the newest committed version of the key in
//! the engine; if it is newer than the snapshot, someone committed the key after this
//! transaction began and the write fails with a conflict without holder. Locks are released only
//! after the holder's commit batch is written, so "not locked" and "committed version in the
//! engine" together cover every other writer. The lock table holds only keys of in-flight
//! transactions.
//!
//! ## First-writer-wins without a read
//!
//! Looking the newest version up in the engine is a B-tree seek per written key, as much as the
//! rest of a small write. So the commit round also remembers, in `recent`, the commit timestamp
//! of every key it publishes, in the same critical section that releases the key's lock; and
//! `recent_horizon` says that every commit after it is there. A transaction whose snapshot is at
//! or after the horizon decides from the map alone: a newer entry than its snapshot is the
//! conflict, no entry means no commit since. Entries at or before the oldest active snapshot can
//! never decide a conflict again (new transactions start at the newest commit), so the map is
//! pruned to the commits since that snapshot and the horizon moves up to it. A long transaction
//! among many writes would keep them all; past [`RECENT_MAX`] keys the older half is dropped and
//! the horizon moves past that transaction's snapshot, which then reads the engine as above.
//!
//! # Durability and group commit
//!
//! A committing transaction queues its write buffer. If no commit is being written, it becomes
//! the leader: it takes the whole queue, assigns consecutive timestamps, appends every version
//! of every queued transaction plus the last-commit metadata as one engine batch *without* sync
//! ([`Engine::write_deferred`]), then publishes: advances `last_visible`, releases the keys, and
//! wakes the others. Transactions that queued meanwhile are written together by the next leader.
//! The engine's upkeep that a batch makes due (redb's: moving the staged writes into its tree,
//! a checkpoint; [`Engine::upkeep`]) runs after the leader has handed on its lead, in its own
//! thread, so that the next round is not held up behind it.
//! A transaction without writes commits without touching storage.
//!
//! Durability comes after publication, as in WiredTiger (a commit is visible once it has its
//! place in the log; `j: true` makes only the acknowledgement wait for the journal): a durable
//! commit then waits until a *sync round* covers its timestamp. The first waiter that finds no
//! round running leads one: it notes `last_visible`, syncs the engine outside the state lock, and
//! records that everything up to the noted timestamp is durable. Waiters that arrive meanwhile
//! wait for that round, or lead the next, so concurrent committers share one `fdatasync`, and
//! commits go on being appended while a sync runs. Releasing keys before the sync is what lets a
//! hot key's next writer proceed without waiting for the disk: a chain of increments to one
//! document shares a sync instead of paying one each. A reader may thus see a commit that is not
//! durable yet, as MongoDB's `local` read concern may; the writer is acknowledged only after the
//! sync, and a later durable commit that read it is synced after it (the log is sequential).
//! What must never be taken back reads only up to `durable`, the *majority commit point*
//! ([`TxnStore::majority_committed`]; on one node MongoDB's majority means journaled):
//! `readConcern: majority` and the change log's readers. The background thread asks for a sync of
//! commits nobody waits for (deferred ones) within a tick, so that point never lags far.
//! [`TxnStore::when_durable`] waits the same way without blocking: its callback runs once a round
//! covers the timestamp, led by a waiter or by the *sync thread*, which leads rounds for
//! callbacks nobody else is syncing for. When the sync thread's last round served several
//! callbacks and fewer wait now, the rest are still executing: it waits up to the last sync's
//! duration (`MAX_GROUP_WAIT` at most) before leading the next round, so that one sync covers
//! them too. A sync costs more CPU than a whole write's own work on a virtualised disk; a lone
//! writer (one callback per round) never waits.
//!
//! # The version cache
//!
//! A read at a snapshot is a descent of the engine's tree to the key's newest version at or
//! below the snapshot. The version cache keeps, for recently read keys, the newest committed
//! version: a read whose snapshot is at or after it takes it from memory. The commit round
//! puts the versions it writes in place of the cached ones before it moves `last_visible`, and
//! a reader fills an entry only with the newest version the engine holds, only when its
//! snapshot sees it, and only if no commit touched its shard in between (see `super::cache`).
//! Its size is
//! [`MvccOptions::version_cache_bytes`].
//!
//! # Garbage collection
//!
//! The watermark is `min(oldest active snapshot, now - history window, last_visible)`. For each
//! key, versions older than the newest version `<= watermark` are invisible to every present and
//! future snapshot and are deleted; if that newest version is a tombstone it goes too. [`Mvcc::gc`]
//! does a bounded amount of this work per call, resuming where it stopped; a background thread
//! started by [`Mvcc::open`] calls it every [`MvccOptions::gc_interval`] (or callers can), for at
//! most a tenth of the interval each time. A pass is skipped while the watermark has not moved
//! past the one the previous pass started with, or while no commit landed between the two
//! (the state keeps the first and last commit timestamp of each second since the last pass):
//! it would find nothing. An idle server, or one whose history window still covers every
//! commit, therefore does not rescan its keyspace every tick.
//! The highest watermark used is remembered: a read-only snapshot older than it (or older than
//! the history window) fails with SnapshotTooOld.
//!
//! # The change log
//!
//! A transaction may carry a change-log record ([`Txn::append_log`]). The commit round writes
//! it under `0x03 commit-ts` in the same batch as the versions, so the log holds exactly the
//! committed transactions, in commit order, and is as durable as they are. Log records are not
//! versioned: they are written once and read only below `last_visible`, so readers
//! ([`TxnStore::read_log`]) never take a lock a writer needs. The background thread trims the
//! oldest records while the log is larger than its retention size and they are older than the
//! minimum retention age, and records the newest trimmed timestamp as `log_floor`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::cache::{Lookup, VersionCache};
use super::keys;
use super::{Conflict, DurableCallback, ScanIter, Ts, Txn, TxnId, TxnStats, TxnStore, WriteResult};
use crate::error::{Code, Error, Result};
use crate::storage::{Engine, KvIter, WriteBatch, range_is_empty};

/// A source of wall-clock seconds for the timestamp oracle and the history window.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u32 + Send + Sync>);

impl Clock {
    /// The system clock (seconds since the Unix epoch).
    pub fn system() -> Clock {
        Clock(Arc::new(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
        }))
    }

    /// A clock that reads the given counter; tests advance it by hand.
    pub fn manual(secs: Arc<AtomicU32>) -> Clock {
        Clock(Arc::new(move || secs.load(Ordering::SeqCst)))
    }

    /// The current time in seconds.
    pub fn now_secs(&self) -> u32 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_secs())
    }
}

/// Options of [`Mvcc::open`].
#[derive(Clone, Debug)]
pub struct MvccOptions {
    /// How far back read-only snapshots may go (`minSnapshotHistoryWindowInSeconds`); versions
    /// newer than `now - history_window` are never collected. Default 5 minutes.
    pub history_window: Duration,
    /// How often the background thread runs garbage collection; `None` starts no thread (callers
    /// then call [`Mvcc::gc`] themselves). Default 1 second.
    pub gc_interval: Option<Duration>,
    /// How many engine entries one [`Mvcc::gc`] call examines at most (rounded up to whole
    /// keys). Default 1000.
    pub gc_batch: usize,
    /// The wall clock. Default: the system clock.
    pub clock: Clock,
    /// The memory the version cache may hold (see "The version cache" in the module
    /// documentation); `0` turns it off. Default 16 MiB.
    pub version_cache_bytes: usize,
}

/// The version cache's default size: an eighth of the redb engine's default page cache.
pub const DEFAULT_VERSION_CACHE_BYTES: usize = 16 << 20;

impl MvccOptions {
    /// The default options for a store that may keep `cache_bytes` of data in memory in all:
    /// the version cache takes an eighth of it, and the rest (returned beside the options) is
    /// left for the engine's page cache.
    pub fn sharing_cache(cache_bytes: usize) -> (MvccOptions, usize) {
        let versions = cache_bytes / 8;
        (
            MvccOptions { version_cache_bytes: versions, ..MvccOptions::default() },
            cache_bytes - versions,
        )
    }
}

impl Default for MvccOptions {
    fn default() -> Self {
        MvccOptions {
            history_window: Duration::from_secs(300),
            gc_interval: Some(Duration::from_secs(1)),
            gc_batch: 1000,
            clock: Clock::system(),
            version_cache_bytes: DEFAULT_VERSION_CACHE_BYTES,
        }
    }
}

/// What one [`Mvcc::gc`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The watermark used.
    pub watermark: Ts,
    /// Engine entries examined.
    pub scanned: usize,
    /// Versions deleted.
    pub deleted: usize,
    /// Whether this call reached the end of the keyspace (the next call starts over).
    pub pass_finished: bool,
}

/// The background GC thread: a stop flag with its condition variable, and the join handle.
type GcThread = (Arc<(Mutex<bool>, Condvar)>, std::thread::JoinHandle<()>);

/// Snapshot-isolation transactions over an [`Engine`]. See the module documentation.
pub struct Mvcc {
    shared: Arc<Shared>,
    gc_thread: Option<GcThread>,
    /// Leads sync rounds for [`TxnStore::when_durable`] callbacks; only over an engine that
    /// defers durability.
    sync_thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Mvcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mvcc").field("stats", &self.stats()).finish()
    }
}

/// A commit waiting for the leader.
struct Pending {
    id: TxnId,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The change-log record, if the transaction logged anything.
    log: Option<Vec<u8>>,
}

/// A map by engine key, for the maps every write looks up under the state's lock (`locks`,
/// `recent`): foldhash rather than SipHash, a third of the cost for keys of a few dozen bytes,
/// seeded at random per process as the version cache's maps are.
type KeyMap<V> = foldhash::HashMap<Vec<u8>, V>;

/// Everything guarded by the one state mutex.
#[derive(Default)]
struct State {
    next_id: u64,
    /// The last timestamp the oracle handed out.
    last_assigned: Ts,
    /// The last commit whose batch is written; the snapshot of new transactions.
    last_visible: Ts,
    /// Keys written by in-flight transactions.
    locks: KeyMap<TxnId>,
    /// The newest commit timestamp of each key committed after `recent_horizon` (see
    /// "First-writer-wins without a read" in the module documentation).
    recent: KeyMap<Ts>,
    /// Every commit newer than this has its keys in `recent`.
    recent_horizon: Ts,
    /// The size of `recent` at which it is pruned next.
    recent_prune_at: usize,
    /// In-flight transactions and their snapshots.
    active: HashMap<TxnId, Ts>,
    /// Commits waiting for a leader.
    queue: Vec<Pending>,
    /// Whether a leader is writing a commit batch.
    leader: bool,
    /// Commit outcomes not yet collected by their transactions.
    results: HashMap<TxnId, Result<Ts>>,
    /// Every commit up to this timestamp is durable (see "Durability and group commit").
    durable: Ts,
    /// Whether a sync round is running.
    syncing: bool,
    /// [`TxnStore::when_durable`] callbacks and the timestamps they wait for.
    durable_waiters: Vec<(Ts, DurableCallback)>,
    /// Set when the [`Mvcc`] is dropped: the sync thread ends.
    stopping: bool,
    /// The highest watermark garbage collection has used.
    gc_floor: Ts,
    /// Where the next [`Mvcc::gc`] call resumes (an engine key), `None` for the start.
    gc_cursor: Option<Vec<u8>>,
    /// The watermark the current pass started with.
    gc_pass_start: Ts,
    /// The watermark the last completed pass started with: until the watermark moves past it,
    /// a new pass would find nothing (new versions are all above it).
    gc_last_pass: Option<Ts>,
    /// The first and last commit timestamps of each second that had commits since
    /// `gc_last_pass`, oldest first (see [`State::committed_within`]).
    commit_spans: VecDeque<(Ts, Ts)>,
    /// How many durability waiters the last sync round served (for the sync thread's group
    /// commit).
    last_round_waiters: usize,
    /// How long the last sync round's sync took: the longest the sync thread waits for more
    /// writers (at most `MAX_GROUP_WAIT`).
    last_sync: Duration,
    /// Bytes (keys and values) the change log holds.
    log_bytes: u64,
    /// The newest change-log timestamp trimmed away.
    log_floor: Ts,
    /// Change-log retention: the size above which old records are trimmed.
    log_max_bytes: u64,
    /// Change-log retention: records younger than this are kept whatever the size.
    log_min_age: Duration,
}

/// The most spans [`State::commit_spans`] holds: past it the two oldest merge into one, which
/// can only make a pass run that could have been skipped, never skip one that finds work.
const MAX_COMMIT_SPANS: usize = 4096;

impl State {
    /// Notes a commit round's timestamps for garbage collection.
    fn note_commits(&mut self, first: Ts, last: Ts) {
        match self.commit_spans.back_mut() {
            Some((_, end)) if end.secs() == first.secs() => *end = last,
            _ => self.commit_spans.push_back((first, last)),
        }
        if self.commit_spans.len() > MAX_COMMIT_SPANS
            && let (Some((first, _)), Some((_, end))) =
                (self.commit_spans.pop_front(), self.commit_spans.pop_front())
        {
            self.commit_spans.push_front((first, end));
        }
    }

    /// Whether some commit may have a timestamp in `(after, upto]`.
    fn committed_within(&self, after: Ts, upto: Ts) -> bool {
        self.commit_spans.iter().any(|&(first, last)| last > after && first <= upto)
    }

    /// Records that a garbage-collection pass at `watermark` is complete (or had nothing to
    /// do), and forgets the commits it covered.
    fn finish_gc_pass(&mut self, watermark: Ts) {
        self.gc_last_pass = Some(watermark);
        while self.commit_spans.front().is_some_and(|&(_, last)| last <= watermark) {
            self.commit_spans.pop_front();
        }
    }
}

/// The longest the sync thread waits for more writers to join a round (see `spawn_syncer`).
const MAX_GROUP_WAIT: Duration = Duration::from_micros(200);

/// `State::recent` is pruned no smaller than this (small in unit tests, so that they prune).
const RECENT_PRUNE_MIN: usize = if cfg!(test) { 16 } else { 4096 };

/// `State::recent` holds at most about this many keys: past it, the oldest half goes and
/// transactions with older snapshots read the engine instead (a long transaction among many
/// writes must not grow it without bound).
const RECENT_MAX: usize = if cfg!(test) { 64 } else { 256 * 1024 };

/// Forgets the commits of `State::recent` that no transaction can conflict with: those at or
/// before the oldest active snapshot (later transactions start at or after the newest commit).
/// Amortized: it runs when the map has doubled since the last pruning.
fn prune_recent(st: &mut State) {
    if st.recent.len() < st.recent_prune_at {
        return;
    }
    let oldest = st.active.values().copied().min().unwrap_or(st.last_visible).min(st.last_visible);
    let mut cut = oldest;
    if st.recent.len() > RECENT_MAX {
        // Too many commits since the oldest snapshot: keep the newer half only.
        let mut stamps: Vec<Ts> = st.recent.values().copied().collect();
        let middle = stamps.len() / 2;
        let (_, median, _) = stamps.select_nth_unstable(middle);
        cut = cut.max(*median);
    }
    st.recent.retain(|_, ts| *ts > cut);
    st.recent_horizon = st.recent_horizon.max(cut);
    st.recent_prune_at = (st.recent.len() * 2).max(RECENT_PRUNE_MIN);
}

/// The state shared by [`Mvcc`], its transactions and its GC thread.
struct Shared {
    engine: Arc<dyn Engine>,
    options: MvccOptions,
    state: Mutex<State>,
    /// Signalled whenever transactions finish, a commit round is published or a sync round
    /// ends.
    changed: Condvar,
    /// Signalled when a [`TxnStore::when_durable`] callback waits and no sync round runs: wakes
    /// the sync thread.
    sync_wanted: Condvar,
    /// Signalled when a sync round ends: wakes the commits waiting for durability (and only
    /// them: `changed` is signalled by every commit round, which would wake them for nothing).
    synced: Condvar,
    /// Whether the engine defers durability to [`Engine::sync`] ([`Engine::defers_sync`]);
    /// otherwise every commit is durable once written and nobody syncs.
    defers: bool,
    commits: AtomicU64,
    aborts: AtomicU64,
    conflicts: AtomicU64,
    batches: AtomicU64,
    /// Sync rounds run.
    syncs: AtomicU64,
    gc_deleted: AtomicU64,
    /// The newest committed version of recently read keys.
    cache: VersionCache,
}

/// The default change-log size before trimming (MongoDB's default oplog is 5% of the disk;
/// Folio uses a fixed 1 GiB, `--oplogSize` changes it).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// How many change-log records one trimming batch deletes at most.
const LOG_TRIM_BATCH: usize = 1000;

/// Formats a timestamp as MongoDB prints it.
fn show_ts(ts: Ts) -> String {
    format!("Timestamp({}, {})", ts.secs(), ts.inc())
}

impl Mvcc {
    /// Opens the MVCC layer over `engine`, recovering the last commit timestamp, and starts the
    /// garbage-collection thread if [`MvccOptions::gc_interval`] is set.
    pub fn open(engine: Arc<dyn Engine>, options: MvccOptions) -> Result<Arc<Mvcc>> {
        let recovered = read_meta_ts(engine.as_ref(), &keys::last_commit_ts_key())?;
        // The cluster time starts at least at the current second, so replies never carry a zero
        // operationTime (drivers gossip it back) and it keeps pace with the clock. Commits after
        // it get larger timestamps, so a snapshot at this time sees exactly the recovered state.
        let last = recovered.max(Ts::new(options.clock.now_secs(), 0));
        let gc_floor = read_meta_ts(engine.as_ref(), &keys::gc_floor_key())?;
        let log_floor = read_meta_ts(engine.as_ref(), &keys::log_floor_key())?;
        let mut log_bytes = 0u64;
        for item in engine.scan(
            Bound::Included(&[keys::LOG][..]),
            Bound::Excluded(&[keys::LOG_END][..]),
            false,
        )? {
            let (k, v) = item?;
            log_bytes += (k.len() + v.len()) as u64;
        }
        let state = State {
            next_id: 1,
            last_assigned: last,
            last_visible: last,
            // Every transaction from now on has a snapshot at or after `last`.
            recent_horizon: last,
            recent_prune_at: RECENT_PRUNE_MIN,
            // What was recovered is what is on disk.
            durable: last,
            gc_floor,
            log_bytes,
            log_floor,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            ..State::default()
        };
        let defers = engine.defers_sync();
        let cache = VersionCache::new(options.version_cache_bytes);
        let shared = Arc::new(Shared {
            engine,
            options,
            state: Mutex::new(state),
            changed: Condvar::new(),
            sync_wanted: Condvar::new(),
            synced: Condvar::new(),
            defers,
            commits: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            gc_deleted: AtomicU64::new(0),
            cache,
        });
        let gc_thread = match shared.options.gc_interval {
            Some(every) => Some(spawn_gc(&shared, every)?),
            None => None,
        };
        let sync_thread = if defers { Some(spawn_syncer(&shared)?) } else { None };
        Ok(Arc::new(Mvcc { shared, gc_thread, sync_thread }))
    }

    /// Runs one bounded step of garbage collection (at most about
    /// [`MvccOptions::gc_batch`] entries), resuming where the previous step stopped.
    pub fn gc(&self) -> Result<GcReport> {
        self.shared.gc(self.shared.options.gc_batch)
    }

    /// Runs garbage collection steps until a full pass over the keyspace is done.
    pub fn gc_full_pass(&self) -> Result<GcReport> {
        let mut total = GcReport::default();
        loop {
            let r = self.gc()?;
            total.watermark = r.watermark;
            total.scanned += r.scanned;
            total.deleted += r.deleted;
            if r.pass_finished {
                total.pass_finished = true;
                return Ok(total);
            }
        }
    }

    /// The oldest timestamp a read-only snapshot may use now.
    pub fn oldest_available(&self) -> Ts {
        let st = self.shared.state.lock();
        self.shared.oldest_available(&st)
    }

    /// The storage engine underneath.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.shared.engine
    }

    /// Trims the change log down to its retention (see [`TxnStore::set_log_retention`]);
    /// returns how many records were deleted. The background thread calls it at every tick.
    pub fn trim_log(&self) -> Result<usize> {
        self.shared.trim_log()
    }
}

impl Drop for Mvcc {
    fn drop(&mut self) {
        if let Some(handle) = self.sync_thread.take() {
            self.shared.state.lock().stopping = true;
            self.shared.sync_wanted.notify_all();
            let _ = handle.join();
        }
        if let Some((stop, handle)) = self.gc_thread.take() {
            *stop.0.lock() = true;
            stop.1.notify_all();
            // A panic in the GC thread has already been reported; shutdown goes on regardless.
            let _ = handle.join();
        }
    }
}

/// Reads a timestamp from the metadata area (zero when absent).
fn read_meta_ts(engine: &dyn Engine, key: &[u8]) -> Result<Ts> {
    match engine.get(key)? {
        None => Ok(Ts::ZERO),
        Some(raw) => {
            let bytes: [u8; 8] = raw
                .as_slice()
                .try_into()
                .map_err(|_| Error::new(Code::InternalError, "corrupt MVCC metadata timestamp"))?;
            Ok(Ts(u64::from_be_bytes(bytes)))
        }
    }
}

/// Starts the background GC thread. It holds only a weak reference, so dropping the [`Mvcc`]
/// (which also signals `stop`) ends it.
fn spawn_gc(shared: &Arc<Shared>, every: Duration) -> Result<GcThread> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new().name("folio-mvcc-gc".into()).spawn(move || {
        loop {
            {
                let mut stopped = stop2.0.lock();
                if !*stopped {
                    stop2.1.wait_for(&mut stopped, every);
                }
                if *stopped {
                    return;
                }
            }
            let Some(shared) = weak.upgrade() else { return };
            // Commits nobody synced for (deferred ones) become durable within a tick, so the
            // majority commit point never lags far behind.
            {
                let mut st = shared.state.lock();
                if shared.defers && st.durable < st.last_visible && st.durable_waiters.is_empty() {
                    let visible = st.last_visible;
                    shared.request_sync(&mut st, visible, Box::new(|_| {}));
                }
            }
            if let Err(e) = shared.trim_log() {
                tracing::warn!("change-log trimming failed: {e}");
            }
            // Bounded steps so commits interleave with them, for at most a tenth of the
            // interval; an unfinished pass resumes at the next tick.
            let budget = Instant::now() + every / 10;
            while Instant::now() < budget {
                match shared.gc(shared.options.gc_batch) {
                    Ok(r) if r.pass_finished => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("MVCC garbage collection failed: {e}");
                        break;
                    }
                }
            }
        }
    })?;
    Ok((stop, handle))
}

/// Starts the sync thread: it leads a sync round whenever [`TxnStore::when_durable`] callbacks
/// wait and no round runs, until the [`Mvcc`] is dropped. Callbacks still waiting then are
/// told that shutdown came first.
fn spawn_syncer(shared: &Arc<Shared>) -> Result<std::thread::JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let handle = std::thread::Builder::new().name("folio-mvcc-sync".into()).spawn(move || {
        let mut st = shared.state.lock();
        loop {
            if st.stopping {
                let left = std::mem::take(&mut st.durable_waiters);
                drop(st);
                for (_, done) in left {
                    done(Err(Error::new(
                        Code::InterruptedAtShutdown,
                        "the server shut down before the write was durable",
                    )));
                }
                return;
            }
            if st.durable_waiters.is_empty() || st.syncing {
                shared.sync_wanted.wait(&mut st);
                continue;
            }
            if st.last_round_waiters >= 2 && st.durable_waiters.len() < st.last_round_waiters {
                // Group commit: the last round served several writers and fewer wait now, so
                // the others are still executing. Waiting up to one sync's duration lets this
                // round cover them too: fewer syncs per write, and a sync costs far more CPU
                // than a write's own work on a virtualised disk. One writer at a time never
                // waits here.
                let wait = st.last_sync.min(MAX_GROUP_WAIT);
                MutexGuard::unlocked(&mut st, || std::thread::sleep(wait));
                if st.durable_waiters.is_empty() || st.syncing {
                    continue;
                }
            }
            if let Err(e) = shared.sync_round(&mut st) {
                tracing::warn!("syncing the storage engine failed: {e}");
            }
        }
    })?;
    Ok(handle)
}

impl Shared {
    /// The newest commit that survives a crash: MongoDB's majority commit point on one node.
    fn majority_point(&self, st: &State) -> Ts {
        if self.defers { st.durable } else { st.last_visible }
    }

    /// The next commit timestamp: never below the wall clock, always above the last one.
    fn next_ts(&self, st: &mut State) -> Ts {
        let now = self.options.clock.now_secs();
        let last = st.last_assigned;
        let ts = if now > last.secs() {
            Ts::new(now, 1)
        } else if last.inc() == u32::MAX {
            Ts::new(last.secs().saturating_add(1), 1)
        } else {
            Ts::new(last.secs(), last.inc() + 1)
        };
        st.last_assigned = ts;
        ts
    }

    /// `now - history window` as a timestamp.
    fn history_cutoff(&self) -> Ts {
        let window = self.options.history_window.as_secs().min(u64::from(u32::MAX)) as u32;
        Ts::new(self.options.clock.now_secs().saturating_sub(window), 0)
    }

    fn oldest_available(&self, st: &State) -> Ts {
        self.history_cutoff().max(st.gc_floor).min(st.last_visible)
    }

    fn watermark(&self, st: &State) -> Ts {
        let oldest_active = st.active.values().min().copied().unwrap_or(st.last_visible);
        oldest_active.min(self.history_cutoff()).min(st.last_visible)
    }

    fn begin(self: &Arc<Self>, at: Option<Ts>) -> Result<Box<dyn Txn>> {
        let mut st = self.state.lock();
        let snapshot = match at {
            None => st.last_visible,
            Some(ts) => {
                if ts > st.last_visible {
                    return Err(Error::new(
                        Code::InvalidOptions,
                        format!(
                            "readConcern atClusterTime value must not be greater than the current \
                             clusterTime. Requested clusterTime: {}; current clusterTime: {}",
                            show_ts(ts),
                            show_ts(st.last_visible)
                        ),
                    ));
                }
                if ts < self.oldest_available(&st) {
                    return Err(Error::new(
                        Code::SnapshotTooOld,
                        format!(
                            "Read timestamp {} is older than the oldest available timestamp.",
                            show_ts(ts)
                        ),
                    ));
                }
                ts
            }
        };
        let id = TxnId(st.next_id);
        st.next_id += 1;
        st.active.insert(id, snapshot);
        Ok(Box::new(MvccTxn {
            shared: self.clone(),
            id,
            snapshot,
            read_only: at.is_some(),
            writes: BTreeMap::new(),
            log: Vec::new(),
            log_header: None,
            last_conflict: None,
            savepoint: None,
            finished: false,
        }))
    }

    /// The newest committed version of `key` visible at `snapshot`: from the version cache,
    /// or from the engine (filling the cache when the newest version is the one visible).
    fn read(&self, key: &[u8], snapshot: Ts) -> Result<Option<Vec<u8>>> {
        let ticket = match self.cache.lookup(key, snapshot) {
            Lookup::Hit(value) => return Ok(value),
            Lookup::Newer => None,
            Lookup::Miss(ticket) => Some(ticket),
        };
        let from = keys::version_key(key, Ts::ZERO);
        let mut to = from.clone();
        let at = to.len() - 8;
        if let Some(ticket) = ticket {
            // The newest version of all: cached if this snapshot sees it.
            to[at..].copy_from_slice(&u64::MAX.to_be_bytes());
            match self.engine.last_in(&from, &to)? {
                None => return Ok(None),
                Some((version, value)) => {
                    let ts = keys::version_key_ts(&version)?;
                    if ts <= snapshot {
                        let value = keys::decode_value(value)?;
                        self.cache.fill(key, ticket, ts, value.as_deref());
                        return Ok(value);
                    }
                }
            }
        }
        // A version newer than the snapshot exists: the one it sees is older.
        to[at..].copy_from_slice(&snapshot.0.to_be_bytes());
        match self.engine.last_in(&from, &to)? {
            None => Ok(None),
            Some((_, value)) => keys::decode_value(value),
        }
    }

    /// The commit timestamp of the newest version of `key`, or zero.
    fn newest_version(&self, key: &[u8]) -> Result<Ts> {
        let from = keys::version_key(key, Ts::ZERO);
        let to = keys::version_key(key, Ts(u64::MAX));
        match self.engine.last_in(&from, &to)? {
            None => Ok(Ts::ZERO),
            Some((k, _)) => Ok(keys::decode_version_key(&k)?.1),
        }
    }

    /// Takes `key` for transaction `id` under first-writer-wins.
    fn acquire(&self, id: TxnId, snapshot: Ts, key: &[u8]) -> Result<WriteResult> {
        {
            let mut st = self.state.lock();
            match st.locks.get(key) {
                Some(&holder) if holder != id => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    return Ok(Err(Conflict { key: key.to_vec(), holder: Some(holder) }));
                }
                Some(_) => return Ok(Ok(())),
                None => {}
            }
            if snapshot >= st.recent_horizon {
                // Every commit after the snapshot is in `recent`: no read of the engine.
                if st.recent.get(key).is_some_and(|&ts| ts > snapshot) {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    return Ok(Err(Conflict { key: key.to_vec(), holder: None }));
                }
                st.locks.insert(key.to_vec(), id);
                return Ok(Ok(()));
            }
            st.locks.insert(key.to_vec(), id);
        }
        // With the lock held, every earlier writer of the key has its version in the engine.
        let newest = match self.newest_version(key) {
            Ok(ts) => ts,
            Err(e) => {
                self.state.lock().locks.remove(key);
                return Err(e);
            }
        };
        if newest > snapshot {
            self.state.lock().locks.remove(key);
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(Conflict { key: key.to_vec(), holder: None }));
        }
        Ok(Ok(()))
    }

    /// Releases keys a transaction took but no longer writes (rolled back to a savepoint).
    fn release(&self, id: TxnId, keys: Vec<Vec<u8>>) {
        if keys.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        for k in keys {
            if st.locks.get(&k) == Some(&id) {
                st.locks.remove(&k);
            }
        }
    }

    /// Ends a transaction that wrote nothing to storage: releases its keys and snapshot.
    fn finish(&self, id: TxnId, keys: impl Iterator<Item = Vec<u8>>) {
        let mut st = self.state.lock();
        for k in keys {
            if st.locks.get(&k) == Some(&id) {
                st.locks.remove(&k);
            }
        }
        st.active.remove(&id);
        drop(st);
        self.changed.notify_all();
    }

    /// Queues a commit and waits for it, leading a commit round when no one else is; a durable
    /// commit then waits for a sync round that covers it.
    fn commit(
        &self,
        id: TxnId,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        log: Option<Vec<u8>>,
        durable: bool,
    ) -> Result<Ts> {
        let mut st = self.state.lock();
        st.queue.push(Pending { id, writes, log });
        loop {
            if let Some(result) = st.results.remove(&id) {
                let ts = result?;
                if durable {
                    self.sync_to(&mut st, ts)?;
                }
                return Ok(ts);
            }
            if st.leader {
                self.changed.wait(&mut st);
            } else {
                st.leader = true;
                self.commit_round(&mut st);
                st.leader = false;
                self.changed.notify_all();
                // The engine's upkeep (moving staged writes into its tree, a checkpoint) runs
                // once the lead is handed on: the next round's commits do not wait behind it.
                // This round's committers, this one included, have their results already.
                MutexGuard::unlocked(&mut st, || self.engine.upkeep());
            }
        }
    }

    /// Waits until every commit up to `ts` is durable, leading sync rounds while nobody else
    /// does.
    fn sync_to(&self, st: &mut MutexGuard<'_, State>, ts: Ts) -> Result<()> {
        if !self.defers {
            return Ok(());
        }
        loop {
            if st.durable >= ts {
                return Ok(());
            }
            if st.syncing {
                self.synced.wait(st);
            } else {
                self.sync_round(st)?;
            }
        }
    }

    /// Registers `done` to run once a sync round covers `ts`, and wakes the sync thread unless
    /// a round is running (its end wakes the thread again for what it did not cover).
    fn request_sync(&self, st: &mut MutexGuard<'_, State>, ts: Ts, done: DurableCallback) {
        st.durable_waiters.push((ts, done));
        if !st.syncing {
            self.sync_wanted.notify_one();
        }
    }

    /// One sync round: makes every published commit durable, then runs the callbacks it
    /// satisfied (all of them, with the error, if the sync failed).
    fn sync_round(&self, st: &mut MutexGuard<'_, State>) -> Result<()> {
        st.syncing = true;
        let target = st.last_visible;
        let started = Instant::now();
        let synced = MutexGuard::unlocked(st, || self.engine.sync());
        st.last_sync = started.elapsed();
        st.syncing = false;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let waiters = std::mem::take(&mut st.durable_waiters);
        st.last_round_waiters = waiters.len();
        let ready: Vec<DurableCallback> = match &synced {
            Ok(()) => {
                st.durable = st.durable.max(target);
                let durable = st.durable;
                let (ready, later): (Vec<_>, Vec<_>) =
                    waiters.into_iter().partition(|(ts, _)| *ts <= durable);
                st.durable_waiters = later;
                ready.into_iter().map(|(_, done)| done).collect()
            }
            Err(_) => waiters.into_iter().map(|(_, done)| done).collect(),
        };
        if !st.durable_waiters.is_empty() {
            // Registered during this round: the sync thread leads the next one.
            self.sync_wanted.notify_one();
        }
        self.synced.notify_all();
        // Change-stream readers wait on `changed` for the majority commit point to move.
        self.changed.notify_all();
        if !ready.is_empty() {
            MutexGuard::unlocked(st, || {
                for done in ready {
                    done(synced.clone());
                }
            });
        }
        synced
    }

    /// Appends every queued commit as one batch (durable at the next sync round) and publishes
    /// them.
    fn commit_round(&self, st: &mut MutexGuard<'_, State>) {
        let group = std::mem::take(&mut st.queue);
        if group.is_empty() {
            return;
        }
        let mut stamped: Vec<(Pending, Ts)> =
            group.into_iter().map(|p| (p, self.next_ts(st))).collect();
        let mut batch = WriteBatch::new();
        let mut last = Ts::ZERO;
        let mut log_bytes = 0u64;
        for (pending, ts) in &mut stamped {
            for (key, value) in &pending.writes {
                batch.put(keys::version_key(key, *ts), keys::encode_value(value.as_deref()));
            }
            // The record moves into the batch: nothing reads it from the queue afterwards.
            if let Some(log) = pending.log.take() {
                let key = keys::log_key(*ts);
                log_bytes += (key.len() + log.len()) as u64;
                batch.put(key, log);
            }
            last = *ts;
        }
        batch.put(keys::last_commit_ts_key(), last.0.to_be_bytes().to_vec());
        // Write without the state lock so that reads, begins and new commits proceed.
        let written = MutexGuard::unlocked(st, || self.engine.write_deferred(batch));
        self.batches.fetch_add(1, Ordering::Relaxed);
        // Before `last_visible` moves, in the same critical section: no snapshot that sees
        // these commits can meet a cached older version (see the version cache's invariant).
        // After a failed write, which may have left some of them behind, the entries go.
        for (pending, ts) in &stamped {
            for (key, value) in &pending.writes {
                match &written {
                    Ok(()) => self.cache.publish(key, *ts, value.as_deref()),
                    Err(_) => self.cache.remove(key),
                }
            }
        }
        if written.is_ok() {
            st.last_visible = last;
            st.log_bytes += log_bytes;
            if let Some(&(_, first)) = stamped.first() {
                st.note_commits(first, last);
            }
        }
        for (pending, ts) in stamped {
            for key in pending.writes.keys() {
                let owned = if st.locks.get(key) == Some(&pending.id) {
                    st.locks.remove_entry(key).map(|(k, _)| k)
                } else {
                    None
                };
                if written.is_ok() {
                    // Published in the same critical section that frees the key, so a writer
                    // that takes it next sees either the lock or this entry.
                    st.recent.insert(owned.unwrap_or_else(|| key.clone()), ts);
                }
            }
            st.active.remove(&pending.id);
            let result = match &written {
                Ok(()) => {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    Ok(ts)
                }
                Err(e) => {
                    self.aborts.fetch_add(1, Ordering::Relaxed);
                    Err(e.clone())
                }
            };
            st.results.insert(pending.id, result);
        }
        prune_recent(st);
    }

    /// Deletes the oldest change-log records while the log is over its size and they are older
    /// than the minimum retention age, in bounded unsynced batches (a trimmed record that
    /// reappears after a crash is harmless: `log_floor` reverts with it).
    fn trim_log(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let (excess, cutoff) = {
                let st = self.state.lock();
                if st.log_bytes <= st.log_max_bytes {
                    return Ok(total);
                }
                let age = st.log_min_age.as_secs().min(u64::from(u32::MAX)) as u32;
                let now = self.options.clock.now_secs();
                // Without a minimum age every record may go, even one of this second.
                let cutoff =
                    if age == 0 { Ts(u64::MAX) } else { Ts::new(now.saturating_sub(age), 0) };
                (st.log_bytes - st.log_max_bytes, cutoff)
            };
            let mut batch = WriteBatch::new();
            let mut freed = 0u64;
            let mut floor = Ts::ZERO;
            let it = self.engine.scan(
                Bound::Included(&[keys::LOG][..]),
                Bound::Excluded(&[keys::LOG_END][..]),
                false,
            )?;
            for item in it {
                let (k, v) = item?;
                let ts = keys::decode_log_key(&k)?;
                if ts >= cutoff || freed >= excess || batch.len() >= LOG_TRIM_BATCH {
                    break;
                }
                freed += (k.len() + v.len()) as u64;
                floor = ts;
                batch.delete(k);
            }
            if batch.is_empty() {
                return Ok(total);
            }
            let n = batch.len();
            batch.put(keys::log_floor_key(), floor.0.to_be_bytes().to_vec());
            self.engine.write(batch, false)?;
            total += n;
            let mut st = self.state.lock();
            st.log_bytes = st.log_bytes.saturating_sub(freed);
            st.log_floor = st.log_floor.max(floor);
        }
    }

    /// One bounded garbage-collection step over whole keys.
    fn gc(&self, max_entries: usize) -> Result<GcReport> {
        let (watermark, cursor) = {
            let mut st = self.state.lock();
            let w = self.watermark(&st);
            st.gc_floor = st.gc_floor.max(w);
            let floor = st.gc_floor;
            if st.gc_cursor.is_none() {
                if let Some(last) = st.gc_last_pass
                    && (floor <= last || !st.committed_within(last, floor))
                {
                    // A pass deletes the versions that a version at or below its watermark
                    // superseded. The last pass did that up to `last`; unless a commit landed in
                    // `(last, floor]`, a pass now would find nothing more, and scanning the
                    // whole keyspace to learn that costs the server CPU every tick.
                    if floor > last {
                        st.finish_gc_pass(floor);
                    }
                    return Ok(GcReport {
                        watermark: floor,
                        pass_finished: true,
                        ..GcReport::default()
                    });
                }
                st.gc_pass_start = floor;
            }
            (floor, st.gc_cursor.clone())
        };
        let version_start = [keys::VERSION];
        let version_end = [keys::VERSION_END];
        let start = match &cursor {
            Some(c) => Bound::Included(c.as_slice()),
            None => Bound::Included(&version_start[..]),
        };
        let mut it = self.engine.scan(start, Bound::Excluded(&version_end[..]), false)?;
        let mut report = GcReport { watermark, ..GcReport::default() };
        let mut batch = WriteBatch::new();
        // The versions of the current key, oldest first: (engine key, ts, is tombstone).
        let mut group: Vec<(Vec<u8>, Ts, bool)> = Vec::new();
        let mut group_key: Option<Vec<u8>> = None;
        let mut next_cursor = None;
        for item in &mut it {
            let (raw, value) = item?;
            let (key, ts) = keys::decode_version_key(&raw)?;
            if group_key.as_deref() != Some(key.as_slice()) {
                collect_group(&group, watermark, &mut batch);
                group.clear();
                if report.scanned >= max_entries {
                    next_cursor = Some(keys::key_prefix(&key));
                    break;
                }
                group_key = Some(key);
            }
            report.scanned += 1;
            group.push((raw, ts, keys::is_tombstone(&value)));
        }
        if next_cursor.is_none() {
            collect_group(&group, watermark, &mut batch);
            report.pass_finished = true;
        }
        report.deleted = batch.len();
        if !batch.is_empty() {
            // In the same atomic batch as the deletions it justifies.
            batch.put(keys::gc_floor_key(), watermark.0.to_be_bytes().to_vec());
            // Deletions need not be durable: versions that reappear after a crash are harmless.
            self.engine.write(batch, false)?;
            self.gc_deleted.fetch_add(report.deleted as u64, Ordering::Relaxed);
        }
        let mut st = self.state.lock();
        if report.pass_finished {
            let start = st.gc_pass_start;
            st.finish_gc_pass(start);
        }
        st.gc_cursor = next_cursor;
        Ok(report)
    }
}

/// Adds to `batch` the deletable versions of one key (oldest first): everything older than the
/// newest version `<= watermark`, and that version too when it is a tombstone.
fn collect_group(group: &[(Vec<u8>, Ts, bool)], watermark: Ts, batch: &mut WriteBatch) {
    let Some(keep) = group.iter().rposition(|(_, ts, _)| *ts <= watermark) else { return };
    for (raw, _, _) in &group[..keep] {
        batch.delete(raw.clone());
    }
    let (raw, _, tombstone) = &group[keep];
    if *tombstone {
        batch.delete(raw.clone());
    }
}

impl TxnStore for Mvcc {
    fn begin(&self) -> Result<Box<dyn Txn>> {
        self.shared.begin(None)
    }

    fn begin_read_only_at(&self, ts: Ts) -> Result<Box<dyn Txn>> {
        self.shared.begin(Some(ts))
    }

    fn last_committed(&self) -> Ts {
        self.shared.state.lock().last_visible
    }

    fn wait_for(&self, txn: TxnId, deadline: Option<Instant>) -> bool {
        let mut st = self.shared.state.lock();
        while st.active.contains_key(&txn) {
            match deadline {
                None => self.shared.changed.wait(&mut st),
                Some(d) => {
                    if self.shared.changed.wait_until(&mut st, d).timed_out() {
                        return !st.active.contains_key(&txn);
                    }
                }
            }
        }
        true
    }

    fn flush(&self) -> Result<()> {
        self.shared.engine.flush()
    }

    fn sync(&self) -> Result<()> {
        let mut st = self.shared.state.lock();
        let ts = st.last_visible;
        self.shared.sync_to(&mut st, ts)
    }

    fn sync_until(&self, ts: Ts) -> Result<()> {
        self.shared.sync_to(&mut self.shared.state.lock(), ts)
    }

    fn when_durable(&self, ts: Ts, done: DurableCallback) {
        if !self.shared.defers {
            return done(Ok(()));
        }
        let mut st = self.shared.state.lock();
        if st.durable >= ts {
            drop(st);
            return done(Ok(()));
        }
        self.shared.request_sync(&mut st, ts, done);
    }

    fn read_log(&self, after: Ts, limit: usize) -> Result<Vec<(Ts, Vec<u8>)>> {
        // Only durable commits (MongoDB's change streams return majority-committed events,
        // which on one node means journaled): every record at or below the durable point is in
        // the engine and survives a crash, and no record above it is returned, so readers never
        // see a hole fill in later nor an event that a crash takes back.
        let visible = self.shared.majority_point(&self.shared.state.lock());
        if after >= visible {
            return Ok(Vec::new());
        }
        let from = keys::log_key(after);
        let to = keys::log_key(visible);
        let mut out = Vec::new();
        for item in self.shared.engine.scan(Bound::Excluded(&from), Bound::Included(&to), false)? {
            let (k, v) = item?;
            out.push((keys::decode_log_key(&k)?, v));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn log_floor(&self) -> Ts {
        self.shared.state.lock().log_floor
    }

    fn set_log_retention(&self, max_bytes: u64, min_age: Duration) {
        let mut st = self.shared.state.lock();
        st.log_max_bytes = max_bytes;
        st.log_min_age = min_age;
    }

    fn log_usage(&self) -> (u64, Duration, u64) {
        let st = self.shared.state.lock();
        (st.log_max_bytes, st.log_min_age, st.log_bytes)
    }

    fn wait_commit_after(&self, after: Ts, deadline: Instant) -> Ts {
        let shared = &self.shared;
        let mut st = shared.state.lock();
        // `changed` is signalled by every published commit round and sync round (and finished
        // transaction).
        while shared.majority_point(&st) <= after {
            // A commit nobody waits to sync (a deferred one) must not hold readers back: ask the
            // sync thread for a round.
            if st.last_visible > after && st.durable_waiters.is_empty() {
                let visible = st.last_visible;
                shared.request_sync(&mut st, visible, Box::new(|_| {}));
            }
            if shared.changed.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        shared.majority_point(&st)
    }

    fn majority_committed(&self) -> Ts {
        self.shared.majority_point(&self.shared.state.lock())
    }

    fn stats(&self) -> TxnStats {
        let s = &self.shared;
        let st = s.state.lock();
        TxnStats {
            started: st.next_id - 1,
            active: st.active.len() as u64,
            commits: s.commits.load(Ordering::Relaxed),
            aborts: s.aborts.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            commit_batches: s.batches.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            gc_deleted: s.gc_deleted.load(Ordering::Relaxed),
            cache_hits: s.cache.counts().0,
            cache_misses: s.cache.counts().1,
            last_committed: st.last_visible,
            gc_watermark: st.gc_floor,
        }
    }
}

/// A transaction of [`Mvcc`].
struct MvccTxn {
    shared: Arc<Shared>,
    id: TxnId,
    snapshot: Ts,
    read_only: bool,
    /// Buffered writes; `None` is a delete. Every key here is locked by this transaction.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The change-log entries appended so far, concatenated.
    log: Vec<u8>,
    /// The change-log record's header.
    log_header: Option<Vec<u8>>,
    /// The most recent write that lost ([`Txn::last_conflict`]).
    last_conflict: Option<Conflict>,
    /// What [`Txn::rollback_to_savepoint`] undoes, when a savepoint is set.
    savepoint: Option<Savepoint>,
    finished: bool,
}

/// A write's key and what the write buffer held for it before (`None`: nothing, so the key was
/// taken by that write; `Some(None)`: a delete).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// The writes made since a savepoint, to undo them.
struct Savepoint {
    /// The writes since the savepoint, oldest first.
    undo: Vec<Undo>,
    /// The length of the change-log entries at the savepoint.
    log_len: usize,
}

impl MvccTxn {
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<WriteResult> {
        if self.read_only {
            return Err(Error::new(
                Code::IllegalOperation,
                "cannot write in a read-only snapshot transaction",
            ));
        }
        // A key already in the write buffer is already this transaction's.
        if !self.writes.contains_key(key)
            && let Err(conflict) = self.shared.acquire(self.id, self.snapshot, key)?
        {
            self.last_conflict = Some(conflict.clone());
            return Ok(Err(conflict));
        }
        let prior = self.writes.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        if let Some(savepoint) = &mut self.savepoint {
            savepoint.undo.push((key.to_vec(), prior));
        }
        Ok(Ok(()))
    }

    fn end_without_storage(&mut self, committed: bool) {
        self.finished = true;
        let counter = if committed { &self.shared.commits } else { &self.shared.aborts };
        counter.fetch_add(1, Ordering::Relaxed);
        let keys = std::mem::take(&mut self.writes).into_keys();
        self.shared.finish(self.id, keys);
    }
}

impl MvccTxn {
    /// Commits, durably before returning or (`durable: false`) at the next sync.
    fn commit_with(mut self, durable: bool) -> Result<Ts> {
        if self.writes.is_empty() {
            self.end_without_storage(true);
            return Ok(self.snapshot);
        }
        self.finished = true;
        let writes = std::mem::take(&mut self.writes);
        let log = (!self.log.is_empty()).then(|| {
            // An empty BSON document when no header was set.
            let mut record = self.log_header.take().unwrap_or_else(|| vec![5, 0, 0, 0, 0]);
            record.append(&mut self.log);
            record
        });
        self.shared.commit(self.id, writes, log, durable)
    }
}

impl Txn for MvccTxn {
    fn id(&self) -> TxnId {
        self.id
    }

    fn snapshot(&self) -> Ts {
        self.snapshot
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(own) => Ok(own.clone()),
            None => self.shared.read(key, self.snapshot),
        }
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Result<ScanIter<'_>> {
        if range_is_empty(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        let engine_start = match start {
            Bound::Included(k) => Bound::Included(keys::key_prefix(k)),
            Bound::Excluded(k) => Bound::Excluded(keys::version_key(k, Ts(u64::MAX))),
            Bound::Unbounded => Bound::Included(vec![keys::VERSION]),
        };
        let engine_end = match end {
            Bound::Included(k) => Bound::Included(keys::version_key(k, Ts(u64::MAX))),
            Bound::Excluded(k) => Bound::Excluded(keys::key_prefix(k)),
            Bound::Unbounded => Bound::Excluded(vec![keys::VERSION_END]),
        };
        let inner = self.shared.engine.scan(
            engine_start.as_ref().map(Vec::as_slice),
            engine_end.as_ref().map(Vec::as_slice),
            reverse,
        )?;
        let snapshot = SnapshotScan::new(inner, self.snapshot, reverse);
        let own = self.writes.range::<[u8], _>((start, end));
        let own: OwnIter<'_> = if reverse { Box::new(own.rev()) } else { Box::new(own) };
        Ok(Box::new(MergeScan { snapshot: snapshot.peekable(), own: own.peekable(), reverse }))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteResult> {
        self.write(key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<WriteResult> {
        self.write(key, None)
    }

    fn last_conflict(&self) -> Option<Conflict> {
        self.last_conflict.clone()
    }

    fn set_savepoint(&mut self) -> bool {
        self.savepoint = Some(Savepoint { undo: Vec::new(), log_len: self.log.len() });
        true
    }

    fn rollback_to_savepoint(&mut self) {
        let Some(savepoint) = self.savepoint.take() else { return };
        let mut released = Vec::new();
        // Newest first, so that a key written twice ends as it was before the first write.
        for (key, prior) in savepoint.undo.into_iter().rev() {
            match prior {
                Some(value) => {
                    self.writes.insert(key, value);
                }
                None => {
                    self.writes.remove(&key);
                    released.push(key);
                }
            }
        }
        self.log.truncate(savepoint.log_len);
        self.shared.release(self.id, released);
        self.savepoint = Some(Savepoint { undo: Vec::new(), log_len: savepoint.log_len });
    }

    fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    fn append_log(&mut self, entry: &[u8]) {
        self.log.extend_from_slice(entry);
    }

    fn set_log_header(&mut self, header: &[u8]) {
        self.log_header = Some(header.to_vec());
    }

    fn commit(self: Box<Self>) -> Result<Ts> {
        (*self).commit_with(true)
    }

    fn commit_deferred(self: Box<Self>) -> Result<Ts> {
        (*self).commit_with(false)
    }

    fn abort(mut self: Box<Self>) {
        self.end_without_storage(false);
    }
}

impl Drop for MvccTxn {
    fn drop(&mut self) {
        if !self.finished {
            self.end_without_storage(false);
        }
    }
}

/// Iterates the versions of an engine scan and yields, per user key, the newest version at the
/// snapshot, skipping tombstones.
struct SnapshotScan {
    inner: std::iter::Fuse<KvIter>,
    snapshot: Ts,
    reverse: bool,
    /// Forward: the newest visible version so far of the key being read.
    candidate: Option<(Vec<u8>, Vec<u8>)>,
    /// Reverse: the key whose visible version was already decided.
    decided: Option<Vec<u8>>,
}

impl SnapshotScan {
    fn new(inner: KvIter, snapshot: Ts, reverse: bool) -> Self {
        SnapshotScan { inner: inner.fuse(), snapshot, reverse, candidate: None, decided: None }
    }

    /// Forward: versions come oldest first, so a key's visible version is known once the next
    /// key starts.
    fn next_forward(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let Some(item) = self.inner.next() else {
                match self.candidate.take() {
                    None => return Ok(None),
                    Some((key, raw)) => match keys::decode_value(raw)? {
                        Some(value) => return Ok(Some((key, value))),
                        None => continue,
                    },
                }
            };
            let (raw_key, raw_value) = item?;
            let (key, ts) = keys::decode_version_key(&raw_key)?;
            let mut out = None;
            if self.candidate.as_ref().is_some_and(|(k, _)| *k != key) {
                out = self.candidate.take();
            }
            if ts <= self.snapshot {
                self.candidate = Some((key, raw_value));
            }
            if let Some((key, raw)) = out
                && let Some(value) = keys::decode_value(raw)?
            {
                return Ok(Some((key, value)));
            }
        }
    }

    /// Reverse: versions come newest first, so the first one at or below the snapshot decides.
    fn next_reverse(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let Some(item) = self.inner.next() else { return Ok(None) };
            let (raw_key, raw_value) = item?;
            let (key, ts) = keys::decode_version_key(&raw_key)?;
            if ts > self.snapshot || self.decided.as_ref() == Some(&key) {
                continue;
            }
            self.decided = Some(key.clone());
            if let Some(value) = keys::decode_value(raw_value)? {
                return Ok(Some((key, value)));
            }
        }
    }
}

impl Iterator for SnapshotScan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = if self.reverse { self.next_reverse() } else { self.next_forward() };
        next.transpose()
    }
}

/// The transaction's own writes in a range, in scan order.
type OwnIter<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a>;

/// Merges the snapshot with the transaction's own writes; own writes win and own deletes hide.
struct MergeScan<'a> {
    snapshot: std::iter::Peekable<SnapshotScan>,
    own: std::iter::Peekable<OwnIter<'a>>,
    reverse: bool,
}

impl Iterator for MergeScan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.snapshot.peek(), self.own.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => return self.snapshot.next(),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((snap_key, _))), Some((own_key, _))) => {
                    let o = snap_key.cmp(own_key);
                    if self.reverse { o.reverse() } else { o }
                }
            };
            match order {
                std::cmp::Ordering::Less => return self.snapshot.next(),
                std::cmp::Ordering::Equal => {
                    self.snapshot.next();
                }
                std::cmp::Ordering::Greater => {}
            }
            if let Some((key, Some(value))) = self.own.next() {
                return Some(Ok((key.clone(), value.clone())));
            }
        }
    }
}
