//! Command dispatch: a sequence of arbitrary command documents run one after another through
//! the embedded `Service` (the path every wire command takes) on a fresh in-memory database.
//! A command must answer, never panic; dispatch turns a panic into an InternalError reply, but
//! libFuzzer's panic hook aborts before that, so a panic is reported as a crash.

#![no_main]

use std::sync::Arc;

use bson::Bson;
use folio::{Service, ServiceOptions};
use folio::{Mvcc, MvccOptions};
use folio::MemoryEngine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let commands = folio_fuzz::documents(data);
    if commands.is_empty() {
        return;
    }
    let store = Mvcc::open(Arc::new(MemoryEngine::new()), MvccOptions::default()).expect("mvcc");
    let svc = Service::new(store, ServiceOptions::default()).expect("service");
    let mut conn = svc.connect("fuzz");
    for mut cmd in commands {
        // Reach past the `$db` check most of the time, and bound every wait: an autocommit
        // write that meets a transaction's write waits for it (60 s without `maxTimeMS`), which
        // is correct but would read as a hang.
        if !cmd.contains_key("$db") {
            cmd.insert("$db", "test");
        }
        cmd.insert("maxTimeMS", Bson::Int32(50));
        let reply = svc.dispatch(&mut conn, cmd).body;
        assert!(reply.contains_key("ok"), "a reply without ok: {reply}");
        if let Ok(code) = reply.get_i32("code") {
            assert_ne!(code, 1, "InternalError: {reply}");
        }
        reply.to_vec().expect("the reply serializes");
    }
});
