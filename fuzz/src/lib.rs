//! Helpers shared by Folio's fuzz targets.
//!
//! Every target but `wire_decode` reads its input as a run of concatenated BSON documents (each
//! starts with its own length, so a fuzzer mutating one document's bytes rarely disturbs the
//! next one's boundary). The documents go through the wire codec's validating parser, the same
//! one the server uses, so they are exactly what a client could send: depth-limited and valid.

use bson::Document;

/// At most this many documents are taken from one input: enough for a command sequence or a
/// small collection, few enough that one input stays fast.
pub const MAX_DOCS: usize = 16;

/// Splits `data` into BSON documents, stopping at the first that is not valid.
pub fn documents(mut data: &[u8]) -> Vec<Document> {
    let mut out = Vec::new();
    while out.len() < MAX_DOCS {
        let Some(prefix) = data.first_chunk::<4>() else { break };
        let len = i32::from_le_bytes(*prefix);
        let Some(bytes) = usize::try_from(len).ok().filter(|&l| l >= 5).and_then(|l| data.get(..l))
        else {
            break;
        };
        match folio_wire::parse_document(bytes) {
            Ok(doc) => out.push(doc),
            Err(_) => break,
        }
        data = &data[bytes.len()..];
    }
    out
}
