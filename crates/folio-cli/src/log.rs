//! The server's log: human-readable text on stderr by default, or MongoDB's structured JSON
//! lines in a file with `--logpath`.
//!
//! Every event goes through [`MongoJsonLayer`], which renders it as mongod does since 4.4 —
//! `{"t":{"$date":...},"s":"I","c":"COMMAND","id":51803,"ctx":"conn12","msg":"Slow query",
//! "attr":{...}}` — and hands the line to the core's in-memory log (so `getLog` shows it) and,
//! with `--logpath`, appends it to the file. Fields named `log_id` and `ctx` become `id` and
//! `ctx`; a field named `attr` holding a JSON object is the attributes; other fields join them.
//! The component comes from the event's module (`COMMAND`, `NETWORK`, `STORAGE`, `INDEX`,
//! `CONTROL`, ...).
//!
//! Rotation (the `logRotate` command, SIGUSR1) either renames the file aside with a timestamp
//! suffix and starts a new one (`--logRotate rename`, the default), or closes and reopens the
//! same path after an outside tool moved it (`reopen`, with `--logappend`). At startup an
//! existing file is renamed aside unless `--logappend` is given, as mongod does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::config::{LogRotate, LogSettings};

/// Whether the server is still starting (warnings then also go to `startupWarnings`).
static STARTING: AtomicBool = AtomicBool::new(true);

/// Marks the end of startup.
pub fn started() {
    STARTING.store(false, Ordering::Relaxed);
}

/// An open log file that can be rotated.
pub struct LogFile {
    path: PathBuf,
    mode: LogRotate,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens `path` for appending; without `append`, an existing file is first renamed aside.
    pub fn open(path: &Path, append: bool, mode: LogRotate) -> Result<LogFile, String> {
        if !append && path.exists() {
            rename_aside(path)?;
        }
        let file = open_append(path)?;
        Ok(LogFile { path: path.to_path_buf(), mode, file: Mutex::new(file) })
    }

    fn write_line(&self, line: &str) {
        let mut f = self.file.lock();
        // A full disk must not stop the server; the line stays in the in-memory log.
        let _ = writeln!(f, "{line}");
    }

    /// Rotates the file as `--logRotate` says.
    pub fn rotate(&self) -> Result<(), String> {
        let mut f = self.file.lock();
        let _ = f.flush();
        if self.mode == LogRotate::Rename {
            rename_aside(&self.path)?;
        }
        *f = open_append(&self.path)?;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))
}

/// Renames `path` to `path.YYYY-MM-DDTHH-MM-SS` (mongod's suffix), adding `.N` if taken.
fn rename_aside(path: &Path) -> Result<(), String> {
    let stamp = bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_default()
        .chars()
        .take(19)
        .map(|c| if c == ':' { '-' } else { c })
        .collect::<String>();
    let mut target = PathBuf::from(format!("{}.{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.{stamp}.{n}", path.display()));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|e| {
        format!("cannot rename the log file {} to {}: {e}", path.display(), target.display())
    })
}

/// Renders events as MongoDB's JSON log lines (see the module docs).
pub struct MongoJsonLayer {
    file: Option<Arc<LogFile>>,
}

impl MongoJsonLayer {
    /// A layer writing to `file` (if any) and to the in-memory log.
    pub fn new(file: Option<Arc<LogFile>>) -> Self {
        MongoJsonLayer { file }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    id: Option<i64>,
    ctx: Option<String>,
    attr: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "ctx" => self.ctx = Some(value.to_string()),
            "attr" => match serde_json::from_str::<Value>(value) {
                Ok(Value::Object(map)) => self.attr.extend(map),
                _ => {
                    self.attr.insert("attr".into(), Value::String(value.to_string()));
                }
            },
            name => {
                self.attr.insert(name.to_string(), Value::String(value.to_string()));
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "log_id" {
            self.id = Some(value);
        } else {
            self.attr.insert(field.name().to_string(), json!(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "log_id" {
            self.id = i64::try_from(value).ok();
        } else {
            self.attr.insert(field.name().to_string(), json!(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attr.insert(field.name().to_string(), json!(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attr.insert(field.name().to_string(), json!(value));
    }
}

/// MongoDB's component for an event's module path.
fn component(target: &str) -> &'static str {
    let t = target;
    if t.starts_with("folio::command::ttl") {
        "INDEX"
    } else if t.starts_with("folio::command") {
        "COMMAND"
    } else if t.starts_with("folio_server") {
        "NETWORK"
    } else if t.starts_with("folio::storage") || t.starts_with("folio::mvcc") {
        "STORAGE"
    } else if t.starts_with("folio::session") {
        "TXN"
    } else if t.starts_with("folio::index") {
        "INDEX"
    } else if t.starts_with("folio::query")
        || t.starts_with("folio::exec")
        || t.starts_with("folio::agg")
    {
        "QUERY"
    } else if t.starts_with("folio_cli") || t.starts_with("folio") {
        "CONTROL"
    } else {
        "-"
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "E",
        Level::WARN => "W",
        Level::INFO => "I",
        Level::DEBUG => "D1",
        Level::TRACE => "D2",
    }
}

/// A stable id for events that name none: a hash of where the event is in the code.
fn callsite_id(event: &Event<'_>) -> i64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let meta = event.metadata();
    let mut h = DefaultHasher::new();
    meta.module_path().hash(&mut h);
    meta.line().hash(&mut h);
    // Six decimal digits, like mongod's log ids.
    (h.finish() % 9_000_000 + 1_000_000) as i64
}

/// One event as a MongoDB JSON log line.
pub fn render(event: &Event<'_>) -> String {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let ctx =
        fields.ctx.unwrap_or_else(|| std::thread::current().name().unwrap_or("main").to_string());
    let mut line = Map::new();
    line.insert(
        "t".into(),
        json!({ "$date": bson::DateTime::now().try_to_rfc3339_string().unwrap_or_default() }),
    );
    line.insert("s".into(), json!(severity(meta.level())));
    line.insert("c".into(), json!(component(meta.target())));
    line.insert("id".into(), json!(fields.id.unwrap_or_else(|| callsite_id(event))));
    line.insert("ctx".into(), json!(ctx));
    line.insert("msg".into(), json!(fields.message));
    if !fields.attr.is_empty() {
        line.insert("attr".into(), Value::Object(fields.attr));
    }
    Value::Object(line).to_string()
}

impl<S: Subscriber> Layer<S> for MongoJsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = render(event);
        if let Some(file) = &self.file {
            file.write_line(&line);
        }
        let startup_warning =
            STARTING.load(Ordering::Relaxed) && *event.metadata().level() <= Level::WARN;
        folio::recent_log::record(line, startup_warning);
    }
}

/// Sets up logging for `serve`: the filter (`RUST_LOG`, else info, or warnings with `--quiet`
/// but still slow operations), the JSON layer, and text on stderr when there is no log file.
/// Returns the log file, for rotation.
pub fn init(settings: &LogSettings) -> Result<Option<Arc<LogFile>>, String> {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;

    let default = if settings.quiet { "warn,folio::command::slow=info" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let file = match &settings.path {
        Some(path) => Some(Arc::new(LogFile::open(path, settings.append, settings.rotate)?)),
        None => None,
    };
    let text = file.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(MongoJsonLayer::new(file.clone()))
        .with(text)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))?;
    if let Some(f) = &file {
        let f = f.clone();
        folio::recent_log::set_rotator(Box::new(move || f.rotate()));
    }
    Ok(file)
}
