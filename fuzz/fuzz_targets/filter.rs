//! Query filters: the first document is a filter, the rest are documents to match it against.
//! Parsing may refuse a filter; a parsed filter must answer for every document without
//! panicking.

#![no_main]

use folio::Filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut docs = folio_fuzz::documents(data).into_iter();
    let Some(filter) = docs.next() else { return };
    let Ok(filter) = Filter::parse(&filter) else { return };
    for doc in docs {
        let plain = filter.matches(&doc);
        let (keyed, _) = filter.matches_with_key(&doc);
        assert_eq!(plain, keyed, "matches and matches_with_key disagree on {doc}");
    }
});
