//! The times a reply carries, `operationTime` and `$clusterTime`, encoded once.
//!
//! Every reply of a server that takes part in causal consistency carries both fields, and
//! every driver gossips the `$clusterTime` it saw last back with each command it sends. A
//! single node signs nothing (the signature's hash is zeros and its key id 0, as a MongoDB
//! server's without keys), so from one reply to the next the two fields differ only in their
//! timestamp.
//!
//! So the `bson` crate encodes them once per process, around a marker timestamp, and each
//! reply copies those bytes and writes its timestamp over the marker's two places
//! ([`append_times`]). The same bytes make a request's check cheap: a `$clusterTime` that is
//! this very encoding, whatever its timestamp, is well-formed BSON without walking it
//! ([`is_own_cluster_time`]); anything else is walked as any other field is.

use std::ops::Range;
use std::sync::LazyLock;

use bson::raw::RawDocument;
use bson::spec::BinarySubtype;
use bson::{Binary, Timestamp, rawdoc};

/// The two fields, encoded around [`MARKER`].
struct Template {
    /// The fields' elements as the encoder writes them (no document header or terminator).
    elements: Vec<u8>,
    /// Where the marker's bytes sit in `elements`: `operationTime`'s, then `clusterTime`'s.
    at: [usize; 2],
    /// Where the `$clusterTime` document sits in `elements`.
    cluster: Range<usize>,
}

/// A timestamp whose encoding appears nowhere else in the template.
const MARKER: Timestamp = Timestamp { time: 0x7a5c_3e1f, increment: 0x0b9d_2468 };

/// How many bytes a timestamp takes.
const TS_LEN: usize = 8;

static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
    let hash = Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] };
    let cluster = rawdoc! { "clusterTime": MARKER, "signature": { "hash": hash, "keyId": 0_i64 } };
    let doc = rawdoc! { "operationTime": MARKER, "$clusterTime": cluster.clone() };
    let bytes = doc.as_bytes();
    let elements = bytes[4..bytes.len() - 1].to_vec();
    // The marker as the encoder writes a timestamp: the value of a one-field document.
    let one = rawdoc! { "t": MARKER };
    let marker = &one.as_bytes()[7..7 + TS_LEN];
    let found: Vec<usize> = elements
        .windows(TS_LEN)
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    let start = elements.windows(cluster.as_bytes().len()).position(|w| w == cluster.as_bytes());
    // Both follow from how BSON is written; the tests check the output they give.
    debug_assert_eq!(found.len(), 2, "the marker is written once per field");
    debug_assert!(start.is_some(), "the cluster time is written as it was encoded alone");
    let start = start.unwrap_or_default();
    Template {
        at: [found.first().copied().unwrap_or_default(), found.get(1).copied().unwrap_or_default()],
        cluster: start..start + cluster.as_bytes().len(),
        elements,
    }
});

/// The encoding of `ts`, as [`MARKER`]'s is written.
fn ts_bytes(ts: Timestamp) -> [u8; TS_LEN] {
    let mut out = [0; TS_LEN];
    out[..4].copy_from_slice(&ts.increment.to_le_bytes());
    out[4..].copy_from_slice(&ts.time.to_le_bytes());
    out
}

/// Appends `operationTime` and `$clusterTime` for `ts` to an encoded document (its length
/// prefix is updated). An error, and the document unchanged, when it is not a document's
/// encoding or would grow past what a length prefix holds.
pub fn append_times(doc: &mut Vec<u8>, ts: Timestamp) -> Result<(), String> {
    let t = &*TEMPLATE;
    let old = doc
        .first_chunk::<4>()
        .map(|len| i32::from_le_bytes(*len))
        .filter(|&len| usize::try_from(len).ok() == Some(doc.len()) && doc.last() == Some(&0))
        .ok_or("not an encoded document")?;
    let len = usize::try_from(old)
        .ok()
        .and_then(|old| old.checked_add(t.elements.len()))
        .and_then(|len| i32::try_from(len).ok())
        .ok_or("the reply is too large to encode")?;
    doc.pop();
    let at = doc.len();
    doc.extend_from_slice(&t.elements);
    doc.push(0);
    let encoded = ts_bytes(ts);
    for place in t.at {
        doc[at + place..at + place + TS_LEN].copy_from_slice(&encoded);
    }
    doc[..4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Whether `doc` is a `$clusterTime` as [`append_times`] writes it, with any timestamp: then it
/// is well-formed, and a request's need not be walked to be validated.
pub fn is_own_cluster_time(doc: &RawDocument) -> bool {
    let t = &*TEMPLATE;
    let own = &t.elements[t.cluster.clone()];
    let bytes = doc.as_bytes();
    let ts = t.at[1] - t.cluster.start;
    bytes.len() == own.len()
        && bytes[..ts] == own[..ts]
        && bytes[ts + TS_LEN..] == own[ts + TS_LEN..]
}

#[cfg(test)]
mod tests {
    use bson::{Bson, RawDocumentBuf, doc};

    use super::*;

    fn appended(to: &RawDocumentBuf, ts: Timestamp) -> bson::Document {
        let mut bytes = to.as_bytes().to_vec();
        append_times(&mut bytes, ts).expect("append");
        crate::to_document(&RawDocumentBuf::from_bytes(bytes).expect("a document"))
            .expect("decodes")
    }

    #[test]
    fn the_times_follow_the_fields_with_the_given_timestamp() {
        let hash = Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] });
        for ts in [
            Timestamp { time: 0, increment: 0 },
            Timestamp { time: 1_700_000_000, increment: 7 },
            MARKER,
            Timestamp { time: u32::MAX, increment: u32::MAX },
        ] {
            let cluster =
                doc! { "clusterTime": ts, "signature": { "hash": hash.clone(), "keyId": 0_i64 } };
            assert_eq!(
                appended(&rawdoc! { "ok": 1.0, "n": "x" }, ts),
                doc! { "ok": 1.0, "n": "x", "operationTime": ts, "$clusterTime": cluster.clone() }
            );
            assert_eq!(
                appended(&rawdoc! {}, ts),
                doc! { "operationTime": ts, "$clusterTime": cluster }
            );
        }
    }

    #[test]
    fn only_an_encoded_document_gets_the_times() {
        for bad in [vec![], vec![5, 0, 0], vec![6, 0, 0, 0, 0], vec![5, 0, 0, 0, 1]] {
            let mut bytes = bad.clone();
            assert!(append_times(&mut bytes, MARKER).is_err(), "{bad:?}");
            assert_eq!(bytes, bad);
        }
    }

    #[test]
    fn an_own_cluster_time_is_recognised_whatever_its_timestamp() {
        let hash = Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] };
        for ts in [Timestamp { time: 3, increment: 4 }, MARKER] {
            let own = rawdoc! { "clusterTime": ts, "signature": { "hash": hash.clone(), "keyId": 0_i64 } };
            assert!(is_own_cluster_time(&own));
            let mut bytes = rawdoc! {}.into_bytes();
            append_times(&mut bytes, ts).unwrap();
            let times = RawDocumentBuf::from_bytes(bytes).unwrap();
            let gossiped = times.get_document("$clusterTime").unwrap();
            assert!(is_own_cluster_time(gossiped));
        }
        let signed = Binary { subtype: BinarySubtype::Generic, bytes: vec![1; 20] };
        let ts = Timestamp { time: 3, increment: 4 };
        for other in [
            rawdoc! { "clusterTime": ts, "signature": { "hash": signed, "keyId": 0_i64 } },
            rawdoc! { "clusterTime": ts, "signature": { "hash": hash.clone(), "keyId": 9_i64 } },
            rawdoc! { "clusterTime": ts, "signature": { "hash": hash.clone(), "keyid": 0_i64 } },
            rawdoc! { "clusterTime": ts, "signature": { "hash": hash.clone(), "keyId": 0_i32 } },
            rawdoc! { "clusterTime": ts },
            rawdoc! { "clusterTime": 1_i64, "signature": { "hash": hash.clone(), "keyId": 0_i64 } },
            rawdoc! {},
        ] {
            assert!(!is_own_cluster_time(&other), "{other:?}");
        }
    }
}
