//! `folio serve` settings: mongod-like flags and mongod's YAML configuration file.
//!
//! The flags are spelled exactly like mongod's (`--bind_ip`, `--replSet`, `--setParameter`,
//! `--maxConns`) so that scripts written for mongod work. A `--config` file supplies values the
//! command line does not; a flag always wins over the file, as with mongod. Unknown
//! `setParameter` names are startup errors rather than silently ignored, because a misspelled
//! `enableTestCommands` would otherwise surface much later as a confusing CommandNotFound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bson::{Bson, Document, doc};
use clap::Args;
use serde::Deserialize;

/// The default port.
pub const DEFAULT_PORT: u16 = 27017;

/// Flags of `folio serve`.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TCP port to listen on.
    #[arg(long, help = "TCP port to listen on [default: 27017]")]
    pub port: Option<u16>,
    /// Comma-separated addresses to listen on.
    #[arg(
        long = "bind_ip",
        value_name = "ADDRS",
        help = "Comma-separated addresses to listen on [default: 127.0.0.1]"
    )]
    pub bind_ip: Option<String>,
    /// Data directory, created if missing.
    #[arg(long, value_name = "DIR", help = "Data directory, created if missing [default: ./data]")]
    pub dbpath: Option<PathBuf>,
    /// Keep all data in memory (nothing is written to disk).
    #[arg(long = "in-memory")]
    pub in_memory: bool,
    /// Replica set name reported to clients.
    #[arg(
        long = "replSet",
        value_name = "NAME",
        help = "Replica set name reported to clients [default: rs0]"
    )]
    pub repl_set: Option<String>,
    /// host:port clients should use to reach this server.
    #[arg(
        long = "advertise-host",
        value_name = "HOST:PORT",
        help = "host:port clients should use to reach this server [default: localhost:<port>]"
    )]
    pub advertise_host: Option<String>,
    /// Server parameter, repeatable: enableTestCommands=1, transactionLifetimeLimitSeconds=N.
    #[arg(long = "setParameter", value_name = "NAME=VALUE")]
    pub set_parameter: Vec<String>,
    /// Maximum number of simultaneous connections.
    #[arg(long = "maxConns", value_name = "N")]
    pub max_conns: Option<u32>,
    /// Change-log (oplog) retention size in megabytes [default: 1024].
    #[arg(long = "oplogSize", value_name = "MB")]
    pub oplog_size: Option<f64>,
    /// Minimum change-log retention in hours, whatever the size [default: 0].
    #[arg(long = "oplogMinRetentionHours", value_name = "HOURS")]
    pub oplog_min_retention_hours: Option<f64>,
    /// mongod-style YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The parts of mongod's configuration file Folio reads. Other sections (`systemLog`,
/// `processManagement`, ...) are accepted and ignored so that existing files load.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    net: NetSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    replication: ReplicationSection,
    #[serde(default)]
    set_parameter: BTreeMap<String, serde_norway::Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct NetSection {
    port: Option<u16>,
    bind_ip: Option<String>,
    max_incoming_connections: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct StorageSection {
    db_path: Option<PathBuf>,
    oplog_min_retention_hours: Option<f64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct ReplicationSection {
    repl_set_name: Option<String>,
    #[serde(rename = "oplogSizeMB")]
    oplog_size_mb: Option<f64>,
}

/// Fully resolved settings for `folio serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The port.
    pub port: u16,
    /// Addresses to listen on.
    pub bind_ips: Vec<String>,
    /// The data directory.
    pub dbpath: PathBuf,
    /// Whether to keep data in memory only.
    pub in_memory: bool,
    /// The replica set name.
    pub repl_set: String,
    /// The advertised `host:port`.
    pub advertise_host: String,
    /// `enableTestCommands`.
    pub test_commands: bool,
    /// `transactionLifetimeLimitSeconds`.
    pub transaction_lifetime_secs: u64,
    /// `--maxConns`.
    pub max_conns: u32,
    /// `ttlMonitorEnabled`.
    pub ttl_monitor_enabled: bool,
    /// `ttlMonitorSleepSecs`.
    pub ttl_monitor_sleep_secs: u64,
    /// `internalQueryMaxMemoryUsageBytesPerOperation` (0: no limit of its own).
    pub operation_memory_bytes: usize,
    /// `internalQueryMaxMemoryUsageBytesAllOperations` (`None`: half of what the process may use).
    pub server_memory_bytes: Option<usize>,
    /// The change log's retention size in MB (`--oplogSize`, `replication.oplogSizeMB`).
    pub oplog_size_mb: Option<f64>,
    /// The change log's minimum retention in hours (`--oplogMinRetentionHours`,
    /// `storage.oplogMinRetentionHours`).
    pub oplog_min_retention_hours: f64,
    /// What `getCmdLineOpts` reports: `argv` and `parsed`.
    pub cmd_line: Document,
}

/// Resolves flags and the optional config file into settings. `argv` is recorded for
/// `getCmdLineOpts`.
pub fn resolve(args: &ServeArgs, argv: &[String]) -> Result<Settings, String> {
    let file = match &args.config {
        Some(path) => load_config(path)?,
        None => ConfigFile::default(),
    };
    let port = args.port.or(file.net.port).unwrap_or(DEFAULT_PORT);
    let bind_ip = args.bind_ip.clone().or(file.net.bind_ip).unwrap_or_else(|| "127.0.0.1".into());
    let bind_ips: Vec<String> =
        bind_ip.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if bind_ips.is_empty() {
        return Err("--bind_ip needs at least one address".into());
    }
    let dbpath =
        args.dbpath.clone().or(file.storage.db_path).unwrap_or_else(|| PathBuf::from("./data"));
    let oplog_size_mb = args.oplog_size.or(file.replication.oplog_size_mb);
    if oplog_size_mb.is_some_and(|mb| !(mb > 0.0 && mb.is_finite())) {
        return Err("--oplogSize must be a positive number of megabytes".into());
    }
    let oplog_min_retention_hours =
        args.oplog_min_retention_hours.or(file.storage.oplog_min_retention_hours).unwrap_or(0.0);
    if !(oplog_min_retention_hours >= 0.0 && oplog_min_retention_hours.is_finite()) {
        return Err("--oplogMinRetentionHours must be a non-negative number of hours".into());
    }
    let repl_set =
        args.repl_set.clone().or(file.replication.repl_set_name).unwrap_or_else(|| "rs0".into());
    if repl_set.is_empty() {
        return Err("--replSet must not be empty".into());
    }
    let advertise_host = args.advertise_host.clone().unwrap_or_else(|| format!("localhost:{port}"));
    let max_conns = args.max_conns.or(file.net.max_incoming_connections).unwrap_or(1_000_000);
    if max_conns == 0 {
        return Err("--maxConns must be at least 1".into());
    }

    // File parameters first, so that flags override them.
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &file.set_parameter {
        params.insert(name.clone(), yaml_scalar(name, value)?);
    }
    for p in &args.set_parameter {
        let Some((name, value)) = p.split_once('=') else {
            return Err(format!("--setParameter expects NAME=VALUE, got {p:?}"));
        };
        params.insert(name.trim().to_string(), value.trim().to_string());
    }
    let mut test_commands = false;
    let mut transaction_lifetime_secs = 60;
    let mut ttl_monitor_enabled = true;
    let mut ttl_monitor_sleep_secs = 60;
    let mut operation_memory_bytes = 0;
    let mut server_memory_bytes = None;
    let bytes = |name: &str, value: &str| {
        value.parse::<usize>().map_err(|_| {
            format!("Bad value for parameter \"{name}\": {value:?} is not a number of bytes")
        })
    };
    for (name, value) in &params {
        match name.as_str() {
            "enableTestCommands" => test_commands = parse_bool(name, value)?,
            "transactionLifetimeLimitSeconds" => {
                transaction_lifetime_secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("Bad value for parameter \"{name}\": {value:?} is not a positive integer"))?;
            }
            "ttlMonitorEnabled" => ttl_monitor_enabled = parse_bool(name, value)?,
            "ttlMonitorSleepSecs" => {
                ttl_monitor_sleep_secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("Bad value for parameter \"{name}\": {value:?} is not a positive integer"))?;
            }
            "internalQueryMaxMemoryUsageBytesPerOperation" => {
                operation_memory_bytes = bytes(name, value)?;
            }
            "internalQueryMaxMemoryUsageBytesAllOperations" => {
                let n = bytes(name, value)?;
                if n == 0 {
                    return Err(format!("Bad value for parameter \"{name}\": must be positive"));
                }
                server_memory_bytes = Some(n);
            }
            _ => {
                return Err(format!(
                    "Illegal --setParameter parameter: \"{name}\" (known: enableTestCommands, transactionLifetimeLimitSeconds, ttlMonitorEnabled, ttlMonitorSleepSecs, internalQueryMaxMemoryUsageBytesPerOperation, internalQueryMaxMemoryUsageBytesAllOperations)"
                ));
            }
        }
    }

    let mut parsed = doc! {
        "net": { "bindIp": bind_ip.clone(), "port": i32::from(port), "maxIncomingConnections": i64::from(max_conns) },
        "replication": { "replSetName": repl_set.clone() },
        "storage": { "dbPath": dbpath.display().to_string(), "inMemory": args.in_memory },
    };
    if !params.is_empty() {
        let p: Document =
            params.iter().map(|(k, v)| (k.clone(), Bson::String(v.clone()))).collect();
        parsed.insert("setParameter", p);
    }
    if let Some(config) = &args.config {
        parsed.insert("config", config.display().to_string());
    }
    if let Some(mb) = oplog_size_mb
        && let Ok(r) = parsed.get_document_mut("replication")
    {
        r.insert("oplogSizeMB", mb);
    }
    let cmd_line = doc! { "argv": argv.to_vec(), "parsed": parsed };

    Ok(Settings {
        port,
        bind_ips,
        dbpath,
        in_memory: args.in_memory,
        repl_set,
        advertise_host,
        test_commands,
        transaction_lifetime_secs,
        max_conns,
        ttl_monitor_enabled,
        ttl_monitor_sleep_secs,
        operation_memory_bytes,
        server_memory_bytes,
        oplog_size_mb,
        oplog_min_retention_hours,
        cmd_line,
    })
}

fn load_config(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_norway::from_str(&text)
        .map_err(|e| format!("invalid config file {}: {e}", path.display()))
}

/// A `setParameter` value from YAML as the string a flag would carry.
fn yaml_scalar(name: &str, value: &serde_norway::Value) -> Result<String, String> {
    match value {
        serde_norway::Value::Bool(b) => Ok(b.to_string()),
        serde_norway::Value::Number(n) => Ok(n.to_string()),
        serde_norway::Value::String(s) => Ok(s.clone()),
        serde_norway::Value::Null
        | serde_norway::Value::Sequence(_)
        | serde_norway::Value::Mapping(_)
        | serde_norway::Value::Tagged(_) => {
            Err(format!("setParameter {name} must be a scalar value"))
        }
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("Bad value for parameter \"{name}\": {value:?} is not a boolean")),
    }
}

#[cfg(test)]
mod oplog_tests {
    use super::*;

    #[test]
    fn oplog_size_comes_from_the_flag_or_the_config_file() {
        let dir = std::env::temp_dir().join(format!("folio-oplog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mongod.conf");
        std::fs::write(
            &path,
            "replication:\n  oplogSizeMB: 2048\nstorage:\n  oplogMinRetentionHours: 1.5\n",
        )
        .unwrap();
        let from_file =
            resolve(&ServeArgs { config: Some(path.clone()), ..ServeArgs::default() }, &[])
                .expect("settings");
        assert_eq!(from_file.oplog_size_mb, Some(2048.0));
        assert_eq!(from_file.oplog_min_retention_hours, 1.5);
        let flag =
            ServeArgs { config: Some(path), oplog_size: Some(990.0), ..ServeArgs::default() };
        assert_eq!(resolve(&flag, &[]).expect("settings").oplog_size_mb, Some(990.0));
        let bad = ServeArgs { oplog_size: Some(-1.0), ..ServeArgs::default() };
        assert!(resolve(&bad, &[]).is_err());
        assert_eq!(resolve(&ServeArgs::default(), &[]).expect("settings").oplog_size_mb, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn defaults_are_mongod_like() {
        let s = resolve(&args(), &["folio".into(), "serve".into()]).expect("resolve");
        assert_eq!(s.port, 27017);
        assert_eq!(s.bind_ips, vec!["127.0.0.1".to_string()]);
        assert_eq!(s.dbpath, PathBuf::from("./data"));
        assert_eq!(s.repl_set, "rs0");
        assert_eq!(s.advertise_host, "localhost:27017");
        assert!(!s.test_commands);
        assert_eq!(s.transaction_lifetime_secs, 60);
        assert_eq!(s.cmd_line.get_array("argv").map(Vec::len).ok(), Some(2));
    }

    #[test]
    fn flags_and_parameters() {
        let a = ServeArgs {
            port: Some(28000),
            bind_ip: Some("127.0.0.1, ::1".into()),
            set_parameter: vec![
                "enableTestCommands=1".into(),
                "transactionLifetimeLimitSeconds=5".into(),
                "internalQueryMaxMemoryUsageBytesPerOperation=1048576".into(),
                "internalQueryMaxMemoryUsageBytesAllOperations=2097152".into(),
            ],
            ..args()
        };
        let s = resolve(&a, &[]).expect("resolve");
        assert_eq!(s.operation_memory_bytes, 1 << 20);
        assert_eq!(s.server_memory_bytes, Some(2 << 20));
        let defaults = resolve(&args(), &[]).expect("resolve");
        assert_eq!((defaults.operation_memory_bytes, defaults.server_memory_bytes), (0, None));
        assert_eq!(s.bind_ips, vec!["127.0.0.1".to_string(), "::1".to_string()]);
        assert_eq!(s.advertise_host, "localhost:28000");
        assert!(s.test_commands);
        assert_eq!(s.transaction_lifetime_secs, 5);
        let parsed = s.cmd_line.get_document("parsed").expect("parsed");
        assert_eq!(
            parsed
                .get_document("setParameter")
                .expect("setParameter")
                .get_str("enableTestCommands")
                .ok(),
            Some("1")
        );
    }

    #[test]
    fn bad_parameters_are_startup_errors() {
        for bad in [
            "noSuchParam=1",
            "enableTestCommands=yes",
            "transactionLifetimeLimitSeconds=0",
            "internalQueryMaxMemoryUsageBytesPerOperation=lots",
            "internalQueryMaxMemoryUsageBytesAllOperations=0",
            "novalue",
        ] {
            let a = ServeArgs { set_parameter: vec![bad.into()], ..args() };
            assert!(resolve(&a, &[]).is_err(), "{bad}");
        }
        let e = resolve(&ServeArgs { set_parameter: vec!["fooBar=1".into()], ..args() }, &[])
            .expect_err("unknown");
        assert!(e.contains("fooBar"), "{e}");
    }

    #[test]
    fn config_file_is_read_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mongod.conf");
        std::fs::write(
            &path,
            "net:\n  port: 29000\n  bindIp: 0.0.0.0,127.0.0.1\nstorage:\n  dbPath: /var/lib/folio\n\
             replication:\n  replSetName: myset\nsetParameter:\n  enableTestCommands: true\n  \
             transactionLifetimeLimitSeconds: 30\nsystemLog:\n  destination: file\n",
        )
        .expect("write");
        let a = ServeArgs { config: Some(path.clone()), ..args() };
        let s = resolve(&a, &[]).expect("resolve");
        assert_eq!(s.port, 29000);
        assert_eq!(s.bind_ips, vec!["0.0.0.0".to_string(), "127.0.0.1".to_string()]);
        assert_eq!(s.dbpath, PathBuf::from("/var/lib/folio"));
        assert_eq!(s.repl_set, "myset");
        assert!(s.test_commands);
        assert_eq!(s.transaction_lifetime_secs, 30);

        let a = ServeArgs {
            config: Some(path.clone()),
            port: Some(1234),
            set_parameter: vec!["transactionLifetimeLimitSeconds=7".into()],
            ..args()
        };
        let s = resolve(&a, &[]).expect("resolve");
        assert_eq!(s.port, 1234);
        assert_eq!(s.transaction_lifetime_secs, 7);

        std::fs::write(&path, "setParameter:\n  bogus: 1\n").expect("write");
        assert!(resolve(&ServeArgs { config: Some(path.clone()), ..args() }, &[]).is_err());
        std::fs::write(&path, "net: [unclosed\n").expect("write");
        assert!(resolve(&ServeArgs { config: Some(path), ..args() }, &[]).is_err());
        let missing = dir.path().join("missing.conf");
        assert!(resolve(&ServeArgs { config: Some(missing), ..args() }, &[]).is_err());
    }
}
