//! Data-driven MVCC tests: scripts of interleaved named transactions with golden output.
//!
//! Each `testscripts/NAME.script` is run against both engines and its output compared with
//! `testscripts/NAME.golden`; `UPDATE_GOLDENFILES=1` rewrites the golden files instead. A script
//! line is one command; its output follows it in the golden file prefixed with `→ `. Lines
//! starting with `#` and blank lines are copied through.
//!
//! Commands (`tN` names a transaction):
//!
//! - `tN: begin` / `tN: begin readonly at=SECS.INC`
//! - `tN: get KEY`, `tN: put KEY=VALUE`, `tN: delete KEY`
//! - `tN: scan [from=K|after=K] [to=K|through=K] [rev]` (start inclusive/exclusive, end
//!   exclusive/inclusive)
//! - `tN: commit`, `tN: abort`, `tN: waitfor tM` (does `tM` finish before a zero deadline)
//! - `tick SECS` (advance the clock), `gc` (one full pass), `dump` (raw versions), `status`
//!
//! The clock starts at 100 seconds; the history window is 60 seconds.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{Clock, Mvcc, MvccOptions, Ts, Txn, TxnId, TxnStore, keys};
use crate::error::Result;
use crate::storage::{Engine, MemoryEngine, RedbEngine};

/// Formats a timestamp as `secs.inc`.
fn ts(t: Ts) -> String {
    format!("{}.{}", t.secs(), t.inc())
}

fn parse_ts(s: &str) -> Ts {
    let (secs, inc) = s.split_once('.').expect("timestamp as SECS.INC");
    Ts::new(secs.parse().expect("seconds"), inc.parse().expect("increment"))
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One script run: the store, its clock and the named transactions.
struct Runner {
    mvcc: Arc<Mvcc>,
    engine: Arc<dyn Engine>,
    clock: Arc<AtomicU32>,
    txns: HashMap<String, Box<dyn Txn>>,
    names: HashMap<TxnId, String>,
}

impl Runner {
    fn new(engine: Arc<dyn Engine>) -> Runner {
        let clock = Arc::new(AtomicU32::new(100));
        let options = MvccOptions {
            history_window: Duration::from_secs(60),
            gc_interval: None,
            gc_batch: 3,
            clock: Clock::manual(clock.clone()),
            version_cache_bytes: MvccOptions::default().version_cache_bytes,
        };
        let mvcc = Mvcc::open(engine.clone(), options).expect("open");
        Runner { mvcc, engine, clock, txns: HashMap::new(), names: HashMap::new() }
    }

    fn run(&mut self, line: &str) -> Vec<String> {
        match self.try_run(line) {
            Ok(out) => out,
            Err(e) => vec![format!("error: {e}")],
        }
    }

    fn try_run(&mut self, line: &str) -> Result<Vec<String>> {
        if let Some((name, cmd)) = line.split_once(": ") {
            return self.txn_command(name.trim(), cmd.trim());
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("tick") => {
                let secs: u32 = words.next().expect("tick SECS").parse().expect("seconds");
                let now = self.clock.fetch_add(secs, Ordering::SeqCst) + secs;
                Ok(vec![format!("now {now}")])
            }
            Some("gc") => {
                let r = self.mvcc.gc_full_pass()?;
                Ok(vec![format!(
                    "watermark={} scanned={} deleted={}",
                    ts(r.watermark),
                    r.scanned,
                    r.deleted
                )])
            }
            Some("dump") => self.dump(),
            Some("status") => {
                let s = self.mvcc.stats();
                Ok(vec![format!(
                    "active={} commits={} aborts={} conflicts={} last_committed={}",
                    s.active,
                    s.commits,
                    s.aborts,
                    s.conflicts,
                    ts(s.last_committed)
                )])
            }
            other => panic!("unknown command {other:?} in {line:?}"),
        }
    }

    fn dump(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.engine.scan(Bound::Unbounded, Bound::Unbounded, false)? {
            let (k, v) = item?;
            if k.first() == Some(&keys::META) {
                let value = u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes"));
                out.push(format!("meta {} = {}", show(&k[1..]), ts(Ts(value))));
                continue;
            }
            let (key, version) = keys::decode_version_key(&k)?;
            let value = match keys::decode_value(v)? {
                Some(v) => show(&v),
                None => "tombstone".into(),
            };
            out.push(format!("{}@{} = {}", show(&key), ts(version), value));
        }
        Ok(out)
    }

    fn txn(&mut self, name: &str) -> Result<&mut Box<dyn Txn>> {
        self.txns
            .get_mut(name)
            .ok_or_else(|| crate::err!(NoSuchTransaction, "no transaction {name}"))
    }

    fn txn_command(&mut self, name: &str, cmd: &str) -> Result<Vec<String>> {
        let (verb, args) = cmd.split_once(' ').unwrap_or((cmd, ""));
        match verb {
            "begin" => {
                let txn = match args.strip_prefix("readonly at=") {
                    Some(at) => self.mvcc.begin_read_only_at(parse_ts(at))?,
                    None => self.mvcc.begin()?,
                };
                let out = format!("snapshot {}", ts(txn.snapshot()));
                self.names.insert(txn.id(), name.to_string());
                self.txns.insert(name.to_string(), txn);
                Ok(vec![out])
            }
            "get" => {
                let value = self.txn(name)?.get(args.as_bytes())?;
                Ok(vec![match value {
                    Some(v) => format!("{args}={}", show(&v)),
                    None => format!("{args} absent"),
                }])
            }
            "put" => {
                let (k, v) = args.split_once('=').expect("put KEY=VALUE");
                let result = self.txn(name)?.put(k.as_bytes(), v.as_bytes())?;
                Ok(vec![self.write_outcome(result)])
            }
            "delete" => {
                let result = self.txn(name)?.delete(args.as_bytes())?;
                Ok(vec![self.write_outcome(result)])
            }
            "scan" => self.scan(name, args),
            "commit" => {
                self.txn(name)?;
                let txn = self.txns.remove(name).expect("checked above");
                Ok(vec![format!("committed at {}", ts(txn.commit()?))])
            }
            "abort" => {
                self.txn(name)?;
                self.txns.remove(name).expect("checked above").abort();
                Ok(vec!["aborted".into()])
            }
            "waitfor" => {
                let other = self.txns.get(args).map(|t| t.id()).unwrap_or(TxnId(u64::MAX));
                let done = self.mvcc.wait_for(other, Some(Instant::now()));
                Ok(vec![if done { "finished".into() } else { "still running".into() }])
            }
            other => panic!("unknown transaction command {other:?}"),
        }
    }

    fn write_outcome(&self, result: super::WriteResult) -> String {
        match result {
            Ok(()) => "ok".into(),
            Err(c) => match c.holder {
                Some(holder) => {
                    let who = self.names.get(&holder).cloned().unwrap_or_else(|| "?".into());
                    format!("conflict: {} held by {who}", show(&c.key))
                }
                None => format!("conflict: {} committed after snapshot", show(&c.key)),
            },
        }
    }

    fn scan(&mut self, name: &str, args: &str) -> Result<Vec<String>> {
        let (mut start, mut end, mut reverse) = (None, None, false);
        for arg in args.split_whitespace() {
            match arg.split_once('=') {
                Some(("from", k)) => start = Some((true, k.as_bytes().to_vec())),
                Some(("after", k)) => start = Some((false, k.as_bytes().to_vec())),
                Some(("to", k)) => end = Some((false, k.as_bytes().to_vec())),
                Some(("through", k)) => end = Some((true, k.as_bytes().to_vec())),
                None if arg == "rev" => reverse = true,
                _ => panic!("bad scan argument {arg:?}"),
            }
        }
        let bound = |b: &Option<(bool, Vec<u8>)>| -> Bound<Vec<u8>> {
            match b {
                None => Bound::Unbounded,
                Some((true, k)) => Bound::Included(k.clone()),
                Some((false, k)) => Bound::Excluded(k.clone()),
            }
        };
        let (start, end) = (bound(&start), bound(&end));
        let txn = self.txn(name)?;
        let iter =
            txn.scan(start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice), reverse)?;
        let mut line = String::new();
        for item in iter {
            let (k, v) = item?;
            let _ = write!(line, "{}={} ", show(&k), show(&v));
        }
        Ok(vec![if line.is_empty() { "(empty)".into() } else { line.trim_end().to_string() }])
    }
}

/// Runs a script against one engine and returns the annotated output.
fn run_script(script: &str, engine: Arc<dyn Engine>) -> String {
    let mut runner = Runner::new(engine);
    let mut out = String::new();
    for line in script.lines() {
        out.push_str(line);
        out.push('\n');
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        for result in runner.run(trimmed) {
            out.push_str("→ ");
            out.push_str(&result);
            out.push('\n');
        }
    }
    out
}

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mvcc/testscripts")
}

#[test]
fn scripts() {
    let update = crate::doc::golden::update_requested();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(script_dir())
        .expect("testscripts directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "script"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10, "scripts missing");
    let mut failures = Vec::new();
    for path in scripts {
        let script = std::fs::read_to_string(&path).expect("read script");
        let golden_path = path.with_extension("golden");
        let memory = run_script(&script, Arc::new(MemoryEngine::new()));
        let dir = tempfile::tempdir().expect("tempdir");
        let redb = run_script(&script, Arc::new(RedbEngine::open(dir.path()).expect("redb")));
        assert_eq!(memory, redb, "engines disagree on {}", path.display());
        if update {
            std::fs::write(&golden_path, &memory).expect("write golden");
            continue;
        }
        let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
        if golden != memory {
            failures.push(format!("{}:\n{memory}", golden_path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDENFILES=1 rewrites):\n{}",
        failures.join("\n")
    );
}
