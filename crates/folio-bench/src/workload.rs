//! The workloads and the data they run on, described once so that every system runs the same
//! logical work.
//!
//! Each system module turns a [`Workload`] into its own calls (driver commands, embedded API
//! calls, SQL). What they share lives here: the names, the sizes of the seeded collections, and
//! the random choices of one operation ([`Choice`]), drawn before the first attempt so that a
//! retried transaction repeats the same logical operation.

use rand::Rng;
use rand::rngs::StdRng;

/// SKUs in the inventory of the *order* workload.
pub const SKUS: i64 = 1_000;
/// Customers of the *order* workload.
pub const CUSTOMERS: i64 = 10_000;
/// Accounts of the *transfer* workload.
pub const ACCOUNTS: i64 = 10_000;
/// Documents read by *point read* and *range* outside the scaling runs.
pub const ITEMS: i64 = 10_000;
/// Documents a *range* query returns.
pub const RANGE_LEN: i64 = 20;
/// Starting stock of every SKU: large enough that no order in a run finds it short.
pub const START_QTY: i64 = 1_000_000_000;
/// Starting balance of every account.
pub const START_BALANCE: i64 = 1_000_000;
/// Documents inserted by one *bulk insert* operation.
pub const BULK_LEN: usize = 1_000;
/// Multiplier that spreads an item's indexed key `k` over `0..n` independently of its `_id`:
/// it is prime and so coprime with every size made of 2s and 5s (10k, 100k, 1M).
const K_SPREAD: i64 = 7_919;

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The floor of a round trip: `ping` through the driver, `SELECT 1` on PostgreSQL, the
    /// `ping` command in-process.
    Ping,
    /// Seed 002's `placeOrder`: insert the order, check and decrement two SKUs, push the order
    /// id onto the customer, in one transaction.
    Order,
    /// Seed 000's `transferFunds`: two `$inc` in one transaction.
    Transfer,
    /// Single ~250-byte document inserts.
    Insert,
    /// [`BULK_LEN`] ~250-byte documents in one `insert_many` (PostgreSQL: one multi-row
    /// `INSERT`); an operation is the whole batch.
    BulkInsert,
    /// `$inc` of one field of a random account by `_id`, outside transactions.
    Update,
    /// `find` by `_id`.
    PointRead,
    /// An indexed range query returning 20 documents, sorted.
    Range,
    /// `$inc` on one document outside transactions.
    HotCounter,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 9] = [
        Workload::Ping,
        Workload::Order,
        Workload::Transfer,
        Workload::Insert,
        Workload::BulkInsert,
        Workload::Update,
        Workload::PointRead,
        Workload::Range,
        Workload::HotCounter,
    ];

    /// The name used on the command line, in the table and in the JSON rows.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Order => "order",
            Workload::Transfer => "transfer",
            Workload::Insert => "insert",
            Workload::BulkInsert => "bulk insert",
            Workload::Update => "update",
            Workload::PointRead => "point read",
            Workload::Range => "range",
            Workload::HotCounter => "hot counter",
        }
    }

    /// Parses a command-line name (`point-read`, `point_read` and `point read` all work).
    pub fn parse(s: &str) -> Result<Workload, String> {
        let wanted = s.trim().replace(['-', '_'], " ");
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == wanted)
            .ok_or_else(|| format!("unknown workload {s:?} (expected one of: ping, order, transfer, insert, bulk-insert, update, point-read, range, hot-counter)"))
    }
}

/// The random choices of one operation.
#[derive(Clone, Debug)]
pub enum Choice {
    /// A `ping`.
    Ping,
    /// Two distinct SKUs with the quantity ordered of each, and the customer.
    Order { skus: [(i64, i64); 2], customer: i64 },
    /// Debit `from`, credit `to`.
    Transfer { from: i64, to: i64, amount: i64 },
    /// A document to insert: its id (24 hex digits, like an ObjectId) and a user number.
    Insert { id: bson::oid::ObjectId, user: i64 },
    /// Documents to insert in one batch, users drawn from `first_user` on (their ids are made
    /// when the batch is built, like an application's).
    BulkInsert { first_user: i64 },
    /// Add `by` to the balance of account `id`.
    Update { id: i64, by: i64 },
    /// Read the item with this `_id`.
    PointRead { id: i64 },
    /// The 20 items with `k >= from`, by `k`.
    Range { from: i64 },
    /// Increment the counter.
    HotCounter,
}

/// Draws the choices of one operation over `items` seeded items.
pub fn choose(w: Workload, items: i64, rng: &mut StdRng) -> Choice {
    match w {
        Workload::Ping => Choice::Ping,
        Workload::Order => {
            let a = rng.random_range(0..SKUS);
            let b = loop {
                let b = rng.random_range(0..SKUS);
                if b != a {
                    break b;
                }
            };
            Choice::Order {
                skus: [(a, rng.random_range(1..=3)), (b, rng.random_range(1..=3))],
                customer: rng.random_range(0..CUSTOMERS),
            }
        }
        Workload::Transfer => {
            let from = rng.random_range(0..ACCOUNTS);
            let to = loop {
                let to = rng.random_range(0..ACCOUNTS);
                if to != from {
                    break to;
                }
            };
            Choice::Transfer { from, to, amount: rng.random_range(1..=100) }
        }
        Workload::Insert => {
            Choice::Insert { id: bson::oid::ObjectId::new(), user: rng.random_range(0..100_000) }
        }
        Workload::BulkInsert => Choice::BulkInsert { first_user: rng.random_range(0..100_000) },
        Workload::Update => {
            Choice::Update { id: rng.random_range(0..ACCOUNTS), by: rng.random_range(1..=100) }
        }
        Workload::PointRead => Choice::PointRead { id: rng.random_range(0..items) },
        Workload::Range => Choice::Range { from: rng.random_range(0..=items - RANGE_LEN) },
        Workload::HotCounter => Choice::HotCounter,
    }
}

/// The events of one *bulk insert* operation: fresh ids, users from `first_user` on.
pub fn bulk_events(first_user: i64) -> Vec<(bson::oid::ObjectId, i64)> {
    (0..BULK_LEN as i64).map(|i| (bson::oid::ObjectId::new(), first_user + i)).collect()
}

/// The indexed key of item `i` among `n`: a permutation of `0..n`.
pub fn item_k(i: i64, n: i64) -> i64 {
    (i * K_SPREAD) % n
}

/// Padding that brings an item to about 200 bytes.
pub const ITEM_PAD: &str = "item-padding-item-padding-item-padding-item-padding-item-padding-\
item-padding-item-padding-item-padding-item-padding-item-padding-item-padding-item-pad";

/// Payload that brings an inserted event to about 250 bytes.
pub const EVENT_PAYLOAD: &str = "event-payload-event-payload-event-payload-event-payload-event-\
payload-event-payload-event-payload-event-payload-event-payload-event-payload-event-payload-\
event-payload-event-p";

/// The collections (tables) a run uses.
pub mod names {
    /// Database of every collection.
    pub const DB: &str = "bench";
    /// Orders written by *order*.
    pub const ORDERS: &str = "orders";
    /// SKUs of *order*.
    pub const INVENTORY: &str = "inventory";
    /// Customers of *order*.
    pub const CUSTOMERS: &str = "customers";
    /// Accounts of *transfer*.
    pub const ACCOUNTS: &str = "accounts";
    /// Documents written by *insert*.
    pub const EVENTS: &str = "events";
    /// The hot counter.
    pub const COUNTERS: &str = "counters";

    /// Items read by *point read* and *range*, one collection per size.
    pub fn items(n: i64) -> String {
        format!("items_{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn item_keys_are_a_permutation() {
        for n in [1_000, 10_000] {
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let k = item_k(i, n) as usize;
                assert!(!seen[k], "k {k} repeats at n {n}");
                seen[k] = true;
            }
        }
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(&w.name().replace(' ', "-")), Ok(w));
        }
        assert!(Workload::parse("nope").is_err());
    }

    #[test]
    fn choices_stay_in_range() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1_000 {
            match choose(Workload::Order, ITEMS, &mut rng) {
                Choice::Order { skus: [(a, n), (b, m)], customer } => {
                    assert_ne!(a, b);
                    assert!((0..SKUS).contains(&a) && (0..SKUS).contains(&b));
                    assert!((1..=3).contains(&n) && (1..=3).contains(&m));
                    assert!((0..CUSTOMERS).contains(&customer));
                }
                other => panic!("unexpected {other:?}"),
            }
            match choose(Workload::Range, 100, &mut rng) {
                Choice::Range { from } => assert!(from + RANGE_LEN <= 100),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn padded_documents_have_the_advertised_size() {
        let event = bson::doc! {
            "_id": bson::oid::ObjectId::new(), "user": 1i64, "kind": "click",
            "payload": EVENT_PAYLOAD,
        };
        let len = event.to_vec().unwrap().len();
        assert!((230..=270).contains(&len), "event is {len} bytes");
        let item = bson::doc! { "_id": 1i64, "k": 2i64, "pad": ITEM_PAD };
        let len = item.to_vec().unwrap().len();
        assert!((180..=220).contains(&len), "item is {len} bytes");
    }
}
