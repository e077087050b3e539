//! Random BSON values for property tests (test builds only).

use bson::{Bson, Document};
use rand::Rng;
use rand::rngs::StdRng;

/// Field names drawn from a small set so that paths collide often.
pub const NAMES: &[&str] = &["a", "b", "c", "0", "1", "_id"];

/// A random value of bounded depth, covering every type that has an interesting order.
pub fn value(rng: &mut StdRng, depth: u32) -> Bson {
    let kinds = if depth == 0 { 14 } else { 16 };
    match rng.random_range(0..kinds) {
        0 => Bson::Int32(rng.random_range(-3..4)),
        1 => Bson::Int64(rng.random_range(-3..4)),
        2 => Bson::Double(f64::from(rng.random_range(-6..7)) / 2.0),
        3 => Bson::Double(f64::NAN),
        4 => Bson::String(["", "a", "ab", "B"][rng.random_range(0..4)].to_string()),
        5 => Bson::Null,
        6 => Bson::Boolean(rng.random()),
        7 => Bson::MinKey,
        8 => Bson::MaxKey,
        9 => Bson::DateTime(bson::DateTime::from_millis(rng.random_range(-2..3))),
        10 => Bson::Timestamp(bson::Timestamp {
            time: rng.random_range(0..2),
            increment: rng.random_range(0..2),
        }),
        11 => Bson::Decimal128(
            ["1", "-0.5", "2.50"][rng.random_range(0..3)]
                .parse()
                .unwrap_or_else(|_| unreachable_decimal()),
        ),
        12 => Bson::ObjectId(bson::oid::ObjectId::from_bytes([rng.random_range(0..2); 12])),
        13 => Bson::Undefined,
        14 => Bson::Array((0..rng.random_range(0..3)).map(|_| value(rng, depth - 1)).collect()),
        _ => Bson::Document(document(rng, depth - 1)),
    }
}

fn unreachable_decimal() -> bson::Decimal128 {
    bson::Decimal128::from_bytes([0; 16])
}

/// A random document of bounded depth.
pub fn document(rng: &mut StdRng, depth: u32) -> Document {
    let mut d = Document::new();
    for _ in 0..rng.random_range(0..4) {
        let name = NAMES[rng.random_range(0..NAMES.len())];
        d.insert(name, value(rng, depth));
    }
    d
}

/// A random dotted path over [`NAMES`], optionally with positional components.
pub fn path(rng: &mut StdRng, positional: bool) -> String {
    let len = rng.random_range(1..4);
    let mut parts = Vec::with_capacity(len);
    for i in 0..len {
        let p = if positional && i > 0 && rng.random_range(0..4) == 0 {
            ["$", "$[]"][rng.random_range(0..2)]
        } else {
            NAMES[rng.random_range(0..NAMES.len() - 1)]
        };
        parts.push(p);
    }
    parts.join(".")
}
