//! The version cache: the newest committed version of recently read keys, kept in memory so
//! that a read need not descend the engine's tree.
//!
//! # Why
//!
//! A read at a snapshot asks the engine for the greatest version key of its user key at or
//! below the snapshot: a B-tree descent from the root with a binary search per level, about
//! 4 K instructions on redb, for each document an index scan names (index entries are in the
//! index's order, not the documents' key order, so each is its own descent). The same documents
//! are read again and again; a hash lookup costs a tenth of a descent.
//!
//! # What an entry means
//!
//! An entry `key → (ts, value)` says: *the newest committed version of `key` is the one
//! committed at `ts`* (a tombstone when `value` is `None`). While that holds, a read at any
//! snapshot `>= ts` sees exactly that version; a read at an older snapshot goes to the engine.
//! Two rules keep it true:
//!
//! - **Publication replaces.** The commit round puts the version it writes in place of the
//!   entry of every key that has one (and removes the entries of a batch the engine refused),
//!   in the critical section that moves `last_visible` (the snapshot new transactions take).
//!   Every snapshot that could see the new version therefore begins after the entry holds it,
//!   and an older snapshot finds the entry newer than itself and reads the engine. Commit
//!   rounds run one at a time, in timestamp order, so the entry ends with the newest version.
//!   A key written again and again (a document updated in place, a counter) is thus read from
//!   the cache every time, where removing it made every read after a write a miss.
//! - **Fills cannot resurrect.** A reader that missed fills the entry with the newest version
//!   the engine holds, whatever its own snapshot, and only when that version is visible to it.
//!   A commit may write a newer version between the reader's engine read and its fill; then the
//!   reader's entry would be stale. So each shard counts its publications and removals (its
//!   *generation*): the reader notes the generation before it reads the engine and fills only
//!   if it is unchanged.
//!   A commit whose versions reached the engine before that read shows up in the read itself
//!   (the newest version is then newer than any snapshot that can exist before its
//!   publication, so nothing is filled); one that reaches the engine after the read and is
//!   published before the fill bumps the generation; one published after the fill replaces the
//!   entry then.
//!
//! Garbage collection deletes only versions older than a newer one, and a tombstone that is
//! the newest (the entry's meaning, "absent since `ts`", stays true). Keys that have no
//! version at all are not cached: inserts look their new keys up, and those entries would only
//! be filled to be replaced at the commit. Publication adds no entry for a key that has none:
//! a bulk load would otherwise push out what readers use.
//!
//! # Bounds
//!
//! Entries are spread over [`SHARDS`] mutex-guarded shards by a hash of the key, so concurrent
//! readers rarely meet. Each shard holds at most its share of the budget (keys, values and a
//! fixed overhead per entry) in two generations of entries: new entries go to the *young*
//! map; when it is full, the young map becomes the *old* one and the previous old map is
//! dropped. A hit in the old map moves the entry back to the young one, so what is read often
//! stays and what was read once ages out, without a list to maintain per read.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Ts;

/// How many shards the entries are spread over.
pub const SHARDS: usize = 16;

/// What an entry costs beyond its key and value: the map's slot, the allocations' headers.
const ENTRY_OVERHEAD: usize = 64;

/// The hasher of the shards' maps, also used to pick a key's shard.
type Hasher = foldhash::fast::RandomState;

/// A cached version: its commit timestamp and value (`None`: a tombstone).
struct Entry {
    ts: Ts,
    value: Option<Box<[u8]>>,
}

impl Entry {
    fn cost(key: &[u8], value: Option<&[u8]>) -> usize {
        Entry::cost_of(key.len(), value)
    }

    fn cost_of(key_len: usize, value: Option<&[u8]>) -> usize {
        key_len + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
    }
}

/// One shard: the two generations of entries and the count of removals.
#[derive(Default)]
struct Shard {
    young: HashMap<Vec<u8>, Entry, Hasher>,
    old: HashMap<Vec<u8>, Entry, Hasher>,
    /// The cost of the young map's entries.
    young_bytes: usize,
    /// Bumped by every publication and removal: a fill that started before it is refused.
    generation: u64,
}

impl Shard {
    /// Adds an entry to the young map, aging the maps first if it is full.
    fn insert_young(&mut self, key: Vec<u8>, entry: Entry, budget: usize) {
        let key_len = key.len();
        let cost = Entry::cost(&key, entry.value.as_deref());
        if self.young_bytes + cost > budget / 2 {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += cost;
        // A key another reader filled first: its entry (the same version) is replaced.
        if let Some(replaced) = self.young.insert(key, entry) {
            let old_cost = Entry::cost_of(key_len, replaced.value.as_deref());
            self.young_bytes = self.young_bytes.saturating_sub(old_cost);
        }
    }

    /// Drops `key`'s entry from both maps and refuses the fills under way (a commit is
    /// publishing a version of a key of this shard); returns the entry's key, if it had one.
    fn forget(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.generation += 1;
        let young = self.young.remove_entry(key).map(|(k, e)| {
            self.young_bytes = self.young_bytes.saturating_sub(Entry::cost(&k, e.value.as_deref()));
            k
        });
        let old = self.old.remove_entry(key).map(|(k, _)| k);
        young.or(old)
    }
}

/// What [`VersionCache::lookup`] found.
pub enum Lookup {
    /// The version the snapshot sees (`None`: the key is deleted).
    Hit(Option<Vec<u8>>),
    /// The newest version is newer than the snapshot: read the engine at the snapshot.
    Newer,
    /// Not cached: read the engine, then [`VersionCache::fill`] with this ticket.
    Miss(Ticket),
}

/// A miss's shard and the generation it had, for the fill.
pub struct Ticket {
    shard: usize,
    generation: u64,
}

/// The cache. See the module documentation.
pub struct VersionCache {
    shards: Box<[Mutex<Shard>]>,
    /// Each shard's share of the budget, both generations together.
    shard_budget: usize,
    hasher: Hasher,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl VersionCache {
    /// A cache of about `bytes`; `0` caches nothing (every lookup misses, fills are ignored).
    pub fn new(bytes: usize) -> VersionCache {
        let shards = if bytes == 0 { 0 } else { SHARDS };
        VersionCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_budget: bytes / SHARDS,
            hasher: Hasher::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % self.shards.len()
    }

    /// The version of `key` a read at `snapshot` sees, if the cache knows it.
    pub fn lookup(&self, key: &[u8], snapshot: Ts) -> Lookup {
        if self.shards.is_empty() {
            return Lookup::Miss(Ticket { shard: 0, generation: 0 });
        }
        let shard = self.shard_of(key);
        let mut s = self.shards[shard].lock();
        let found = match s.young.get(key) {
            Some(e) => Some((e.ts, e.value.as_deref().map(<[u8]>::to_vec))),
            None => match s.old.remove_entry(key) {
                Some((k, e)) => {
                    let found = (e.ts, e.value.as_deref().map(<[u8]>::to_vec));
                    let budget = self.shard_budget;
                    s.insert_young(k, e, budget);
                    Some(found)
                }
                None => None,
            },
        };
        match found {
            Some((ts, value)) if ts <= snapshot => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(value)
            }
            Some(_) => Lookup::Newer,
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(Ticket { shard, generation: s.generation })
            }
        }
    }

    /// Records that the newest committed version of `key` is the one at `ts`, as read from the
    /// engine after the miss that gave `ticket`; ignored if a commit removed anything from the
    /// shard since.
    pub fn fill(&self, key: &[u8], ticket: Ticket, ts: Ts, value: Option<&[u8]>) {
        if self.shards.is_empty() || Entry::cost(key, value) > self.shard_budget / 2 {
            return;
        }
        let mut s = self.shards[ticket.shard].lock();
        if s.generation != ticket.generation {
            return;
        }
        let entry = Entry { ts, value: value.map(Box::from) };
        let budget = self.shard_budget;
        s.insert_young(key.to_vec(), entry, budget);
    }

    /// Records that a commit at `ts` wrote `value` for `key` (`None`: deleted it), as the
    /// commit round publishes it: an entry of `key` now holds that version; a key without an
    /// entry still has none.
    pub fn publish(&self, key: &[u8], ts: Ts, value: Option<&[u8]>) {
        if self.shards.is_empty() {
            return;
        }
        let mut s = self.shards[self.shard_of(key)].lock();
        // A version too large for the cache leaves the key without an entry, as a fill would.
        if let Some(k) = s.forget(key)
            && Entry::cost(key, value) <= self.shard_budget / 2
        {
            let budget = self.shard_budget;
            s.insert_young(k, Entry { ts, value: value.map(Box::from) }, budget);
        }
    }

    /// Forgets `key`: a commit the engine refused may have left a newer version of it.
    pub fn remove(&self, key: &[u8]) {
        if self.shards.is_empty() {
            return;
        }
        self.shards[self.shard_of(key)].lock().forget(key);
    }

    /// Lookups answered from the cache, and lookups that missed.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(c: &VersionCache, key: &[u8], at: u64) -> Option<Option<Vec<u8>>> {
        match c.lookup(key, Ts(at)) {
            Lookup::Hit(v) => Some(v),
            _ => None,
        }
    }

    fn miss(c: &VersionCache, key: &[u8]) -> Ticket {
        match c.lookup(key, Ts(u64::MAX)) {
            Lookup::Miss(t) => t,
            _ => panic!("expected a miss"),
        }
    }

    #[test]
    fn a_filled_version_serves_snapshots_at_or_after_it() {
        let c = VersionCache::new(1 << 20);
        let t = miss(&c, b"k");
        c.fill(b"k", t, Ts(10), Some(b"v"));
        assert_eq!(hit(&c, b"k", 10), Some(Some(b"v".to_vec())));
        assert_eq!(hit(&c, b"k", 99), Some(Some(b"v".to_vec())));
        assert!(matches!(c.lookup(b"k", Ts(9)), Lookup::Newer));
        let t = miss(&c, b"gone");
        c.fill(b"gone", t, Ts(5), None);
        assert_eq!(hit(&c, b"gone", 5), Some(None));
        assert_eq!(c.counts(), (3, 2));
    }

    #[test]
    fn a_removal_since_the_miss_refuses_the_fill() {
        let c = VersionCache::new(1 << 20);
        let t = miss(&c, b"k");
        // A commit of any key of the same shard publishes between the read and the fill.
        c.remove(b"k");
        c.fill(b"k", t, Ts(10), Some(b"old"));
        assert!(hit(&c, b"k", 99).is_none());
        let t = miss(&c, b"k");
        c.fill(b"k", t, Ts(11), Some(b"new"));
        assert_eq!(hit(&c, b"k", 11), Some(Some(b"new".to_vec())));
        c.remove(b"k");
        assert!(hit(&c, b"k", 99).is_none());
    }

    #[test]
    fn a_publication_replaces_a_cached_version_and_adds_none() {
        let c = VersionCache::new(1 << 20);
        let t = miss(&c, b"k");
        c.fill(b"k", t, Ts(10), Some(b"v1"));
        // The commit at 20 publishes its version: snapshots from 20 on read it from the cache,
        // older ones find a newer version and go to the engine.
        c.publish(b"k", Ts(20), Some(b"v2"));
        assert_eq!(hit(&c, b"k", 20), Some(Some(b"v2".to_vec())));
        assert!(matches!(c.lookup(b"k", Ts(15)), Lookup::Newer));
        // A deletion is cached as such.
        c.publish(b"k", Ts(30), None);
        assert_eq!(hit(&c, b"k", 30), Some(None));
        // A key without an entry gets none, and a fill that missed before the publication of
        // any key of its shard is refused.
        let t = miss(&c, b"new");
        c.publish(b"new", Ts(40), Some(b"x"));
        assert!(hit(&c, b"new", 99).is_none());
        c.fill(b"new", t, Ts(40), Some(b"x"));
        assert!(hit(&c, b"new", 99).is_none());
        // A version too large for the shard leaves no entry behind.
        let big = vec![0u8; c.shard_budget];
        c.publish(b"k", Ts(50), Some(&big));
        assert!(hit(&c, b"k", 99).is_none());
    }

    #[test]
    fn the_budget_bounds_each_shard_and_keeps_what_is_read() {
        let budget = 64 * 1024;
        let c = VersionCache::new(budget);
        let value = [7u8; 100];
        let hot = b"hot".to_vec();
        let t = miss(&c, &hot);
        c.fill(&hot, t, Ts(1), Some(&value));
        for i in 0..10_000u32 {
            let key = i.to_be_bytes();
            if let Lookup::Miss(t) = c.lookup(&key, Ts(u64::MAX)) {
                c.fill(&key, t, Ts(1), Some(&value));
            }
            // Read often, the hot key survives the aging of its shard.
            assert!(hit(&c, &hot, 1).is_some(), "hot key lost after {i} fills");
        }
        for s in c.shards.iter() {
            let s = s.lock();
            let cost: usize = s
                .young
                .iter()
                .chain(s.old.iter())
                .map(|(k, e)| Entry::cost(k, e.value.as_deref()))
                .sum();
            assert!(cost <= c.shard_budget, "shard holds {cost} of {}", c.shard_budget);
        }
    }

    #[test]
    fn a_cache_of_zero_bytes_holds_nothing() {
        let c = VersionCache::new(0);
        let t = miss(&c, b"k");
        c.fill(b"k", t, Ts(1), Some(b"v"));
        assert!(hit(&c, b"k", 5).is_none());
        c.publish(b"k", Ts(6), Some(b"v"));
        assert!(hit(&c, b"k", 9).is_none());
        c.remove(b"k");
    }
}
