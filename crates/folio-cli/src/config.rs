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
    /// Keep the data in a PostgreSQL-compatible database (`postgresql://user@host:port/db`)
    /// shared by every front end started with the same URL, instead of a data directory.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Serve clients through a TCP load balancer (`loadBalanced=true` in their URI): each
    /// connection's first `hello` answers this front end's `serviceId`.
    #[arg(long = "loadBalanced")]
    pub load_balanced: bool,
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
    /// The storage engine's cache in gigabytes, 0.25 to 10000 [default: 0.125, PostgreSQL's
    /// shared_buffers]: an eighth for recently read document versions, the rest for file pages;
    /// MongoDB's name for its engine's cache.
    #[arg(long = "wiredTigerCacheSizeGB", value_name = "GB")]
    pub cache_size_gb: Option<f64>,
    /// mongod-style YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the log to this file, in MongoDB's JSON format (default: text on stderr).
    #[arg(long, value_name = "FILE")]
    pub logpath: Option<PathBuf>,
    /// Append to an existing log file instead of renaming it aside first.
    #[arg(long)]
    pub logappend: bool,
    /// How `logRotate` and SIGUSR1 rotate the log file: rename (default) or reopen.
    #[arg(long = "logRotate", value_name = "rename|reopen")]
    pub log_rotate: Option<String>,
    /// Log less: only warnings, errors and slow operations.
    #[arg(long)]
    pub quiet: bool,
    /// Operations slower than this many milliseconds are logged (and profiled at level 1).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub slowms: Option<i64>,
    /// The fraction of slow operations logged and profiled (0.0 to 1.0).
    #[arg(long = "slowOpSampleRate", value_name = "RATE")]
    pub slow_op_sample_rate: Option<f64>,
    /// The profiling level of every database: 0 off, 1 slow operations, 2 all.
    #[arg(long, value_name = "LEVEL")]
    pub profile: Option<i32>,
    /// Serve Prometheus metrics over HTTP at /metrics on this port (off by default).
    #[arg(long = "metricsPort", value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Shut down when standard input reaches its end (the parent closed the pipe or died):
    /// a test fixture never outlives the test run that started it.
    #[arg(long = "exit-on-stdin-close")]
    pub exit_on_stdin_close: bool,
    /// Require authentication and check every command against the user's roles.
    #[arg(long)]
    pub auth: bool,
    /// TLS mode: disabled, allowTLS, preferTLS or requireTLS.
    #[arg(long = "tlsMode", value_name = "MODE")]
    pub tls_mode: Option<String>,
    /// PEM file with the server's certificate chain and private key.
    #[arg(long = "tlsCertificateKeyFile", value_name = "FILE")]
    pub tls_certificate_key_file: Option<PathBuf>,
    /// Password of an encrypted private key (refused: rustls reads unencrypted keys only).
    #[arg(long = "tlsCertificateKeyFilePassword", value_name = "PASSWORD")]
    pub tls_certificate_key_file_password: Option<String>,
    /// PEM file of the certificate authorities that client certificates must chain to.
    #[arg(long = "tlsCAFile", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// With --tlsCAFile, also accept clients that present no certificate.
    #[arg(long = "tlsAllowConnectionsWithoutCertificates")]
    pub tls_allow_connections_without_certificates: bool,
    /// Accept client certificates that do not verify against --tlsCAFile.
    #[arg(long = "tlsAllowInvalidCertificates")]
    pub tls_allow_invalid_certificates: bool,
}

/// The parts of mongod's configuration file Folio reads. As mongod does, a key Folio does not
/// know is a startup error naming the key ("Unrecognized option: net.prot"), rather than a
/// setting silently not applied.
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
    system_log: SystemLogSection,
    #[serde(default)]
    operation_profiling: ProfilingSection,
    #[serde(default)]
    set_parameter: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    security: SecuritySection,
}

/// `security`: `authorization` is read; the cluster-membership and external-directory settings
/// are refused rather than ignored (a deployment relying on them would be open otherwise).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct SecuritySection {
    authorization: Option<String>,
    key_file: Option<serde_norway::Value>,
    cluster_auth_mode: Option<serde_norway::Value>,
    ldap: Option<serde_norway::Value>,
    sasl: Option<serde_norway::Value>,
    enable_encryption: Option<serde_norway::Value>,
}

/// `net.tls`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct TlsSection {
    mode: Option<String>,
    certificate_key_file: Option<PathBuf>,
    certificate_key_file_password: Option<String>,
    #[serde(rename = "CAFile")]
    ca_file: Option<PathBuf>,
    allow_connections_without_certificates: Option<bool>,
    allow_invalid_certificates: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct NetSection {
    port: Option<u16>,
    bind_ip: Option<String>,
    max_incoming_connections: Option<u32>,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    tls: TlsSection,
    /// `net.loadBalanced`: Folio's key for `--loadBalanced`.
    load_balanced: Option<bool>,
}

/// `net.metrics`: Folio's own key for the Prometheus endpoint.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct MetricsSection {
    port: Option<u16>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct StorageSection {
    db_path: Option<PathBuf>,
    oplog_min_retention_hours: Option<f64>,
    /// `storage.url`: the PostgreSQL-compatible database (as `--storage`).
    url: Option<String>,
    #[serde(default)]
    wired_tiger: WiredTigerSection,
}

/// `storage.wiredTiger`: only `engineConfig.cacheSizeGB`, which sizes Folio's own page cache.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WiredTigerSection {
    #[serde(default)]
    engine_config: EngineConfigSection,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EngineConfigSection {
    #[serde(rename = "cacheSizeGB")]
    cache_size_gb: Option<f64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct ReplicationSection {
    repl_set_name: Option<String>,
    #[serde(rename = "oplogSizeMB")]
    oplog_size_mb: Option<f64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct SystemLogSection {
    /// `file` or `syslog` (refused); absent: standard error.
    destination: Option<String>,
    path: Option<PathBuf>,
    log_append: Option<bool>,
    log_rotate: Option<String>,
    quiet: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct ProfilingSection {
    /// `off`, `slowOp` or `all`.
    mode: Option<String>,
    slow_op_threshold_ms: Option<i64>,
    slow_op_sample_rate: Option<f64>,
}

/// How the log file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRotate {
    /// Rename the file aside (`FILE.YYYY-MM-DDTHH-MM-SS`) and start a new one.
    Rename,
    /// Close and reopen the same path (after an outside tool moved it).
    Reopen,
}

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// The log file; `None`: text on stderr.
    pub path: Option<PathBuf>,
    /// `--logappend`.
    pub append: bool,
    /// `--logRotate`.
    pub rotate: LogRotate,
    /// `--quiet`.
    pub quiet: bool,
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
    /// `--storage` (`storage.url`): the shared SQL database, instead of the data directory.
    pub storage_url: Option<String>,
    /// `--loadBalanced` (`net.loadBalanced`).
    pub load_balanced: bool,
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
    /// The data directory's page cache in bytes (`--wiredTigerCacheSizeGB`); `None`: the
    /// engine's default.
    pub cache_bytes: Option<usize>,
    /// What `getCmdLineOpts` reports: `argv` and `parsed` (passwords replaced).
    pub cmd_line: Document,
    /// The log's destination and rotation.
    pub log: LogSettings,
    /// `--slowms`.
    pub slow_ms: u64,
    /// `--slowOpSampleRate`.
    pub slow_op_sample_rate: f64,
    /// `--profile`.
    pub profile_level: i32,
    /// `--metricsPort`: the Prometheus endpoint's port, if on.
    pub metrics_port: Option<u16>,
    /// `--auth` / `security.authorization: enabled`.
    pub auth: bool,
    /// `authenticationMechanisms`.
    pub auth_mechanisms: Vec<String>,
    /// `enableLocalhostAuthBypass`.
    pub localhost_auth_bypass: bool,
    /// TLS settings.
    pub tls: TlsSettings,
}

/// TLS settings, as given (the files are read when the server starts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// `disabled`, `allowTLS`, `preferTLS` or `requireTLS`.
    pub mode: String,
    /// The server's certificate chain and key.
    pub certificate_key_file: Option<PathBuf>,
    /// CAs for client certificates.
    pub ca_file: Option<PathBuf>,
    /// Accept clients without a certificate.
    pub allow_connections_without_certificates: bool,
    /// Accept client certificates that do not verify.
    pub allow_invalid_certificates: bool,
}

/// The mechanisms Folio implements, for `authenticationMechanisms`.
const KNOWN_MECHANISMS: &[&str] = &["SCRAM-SHA-1", "SCRAM-SHA-256", "MONGODB-X509"];

/// Mechanisms MongoDB Enterprise has and Folio refuses by name.
const UNSUPPORTED_MECHANISMS: &[(&str, &str)] = &[
    ("PLAIN", "LDAP"),
    ("GSSAPI", "Kerberos"),
    ("MONGODB-AWS", "AWS IAM"),
    ("MONGODB-OIDC", "OIDC"),
];

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
    if args.in_memory && (args.dbpath.is_some() || file.storage.db_path.is_some()) {
        return Err("--in-memory and --dbpath (storage.dbPath) cannot be used together: an in-memory server has no data directory".into());
    }
    let storage_url = args.storage.clone().or(file.storage.url);
    if let Some(url) = &storage_url {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(format!(
                "--storage (storage.url) must be a postgresql:// URL, not {url:?}"
            ));
        }
        if args.in_memory || args.dbpath.is_some() || file.storage.db_path.is_some() {
            return Err("--storage (storage.url) cannot be used with --in-memory or --dbpath (storage.dbPath): the data is in the database it names".into());
        }
    }
    let dbpath =
        args.dbpath.clone().or(file.storage.db_path).unwrap_or_else(|| PathBuf::from("./data"));
    if !args.in_memory && storage_url.is_none() && dbpath.exists() && !dbpath.is_dir() {
        return Err(format!(
            "the data path {} is a file, not a directory (--dbpath names a directory)",
            dbpath.display()
        ));
    }
    let log = log_settings(args, &file.system_log)?;
    let (slow_ms, slow_op_sample_rate, profile_level) =
        profiling_settings(args, &file.operation_profiling)?;
    let metrics_port = args.metrics_port.or(file.net.metrics.port);
    let oplog_size_mb = args.oplog_size.or(file.replication.oplog_size_mb);
    if oplog_size_mb.is_some_and(|mb| !(mb > 0.0 && mb.is_finite())) {
        return Err("--oplogSize must be a positive number of megabytes".into());
    }
    let oplog_min_retention_hours =
        args.oplog_min_retention_hours.or(file.storage.oplog_min_retention_hours).unwrap_or(0.0);
    if !(oplog_min_retention_hours >= 0.0 && oplog_min_retention_hours.is_finite()) {
        return Err("--oplogMinRetentionHours must be a non-negative number of hours".into());
    }
    let cache_size_gb = args.cache_size_gb.or(file.storage.wired_tiger.engine_config.cache_size_gb);
    let cache_bytes = match cache_size_gb {
        None => None,
        Some(_) if args.in_memory || storage_url.is_some() => {
            return Err("--wiredTigerCacheSizeGB (storage.wiredTiger.engineConfig.cacheSizeGB) \
                        sizes the data directory's page cache; --in-memory and --storage have none"
                .into());
        }
        // MongoDB's bounds.
        Some(gb) if (0.25..=10000.0).contains(&gb) => Some((gb * (1u64 << 30) as f64) as usize),
        Some(gb) => {
            return Err(format!(
                "--wiredTigerCacheSizeGB must be between 0.25 and 10000, not {gb}"
            ));
        }
    };
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
    let mut auth_mechanisms: Vec<String> = vec!["SCRAM-SHA-1".into(), "SCRAM-SHA-256".into()];
    let mut localhost_auth_bypass = true;
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
            "enableLocalhostAuthBypass" => localhost_auth_bypass = parse_bool(name, value)?,
            "authenticationMechanisms" => {
                auth_mechanisms = Vec::new();
                for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                    if let Some((_, what)) = UNSUPPORTED_MECHANISMS.iter().find(|(n, _)| *n == m) {
                        return Err(format!(
                            "Bad value for parameter \"{name}\": {m} ({what}) is not supported by Folio"
                        ));
                    }
                    if !KNOWN_MECHANISMS.contains(&m) {
                        return Err(format!(
                            "Bad value for parameter \"{name}\": unknown mechanism {m:?}"
                        ));
                    }
                    auth_mechanisms.push(m.to_string());
                }
                if auth_mechanisms.is_empty() {
                    return Err(format!("Bad value for parameter \"{name}\": no mechanism"));
                }
            }
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
                    "Illegal --setParameter parameter: \"{name}\" (known: enableTestCommands, enableLocalhostAuthBypass, authenticationMechanisms, transactionLifetimeLimitSeconds, ttlMonitorEnabled, ttlMonitorSleepSecs, internalQueryMaxMemoryUsageBytesPerOperation, internalQueryMaxMemoryUsageBytesAllOperations)"
                ));
            }
        }
    }

    let security = &file.security;
    for (set, what) in [
        (security.key_file.is_some(), "security.keyFile (internal cluster authentication)"),
        (
            security.cluster_auth_mode.is_some(),
            "security.clusterAuthMode (x.509 cluster membership)",
        ),
        (security.ldap.is_some(), "security.ldap (LDAP authentication)"),
        (security.sasl.is_some(), "security.sasl (Kerberos authentication)"),
        (security.enable_encryption.is_some(), "security.enableEncryption (encryption at rest)"),
    ] {
        if set {
            return Err(format!("{what} is not supported by Folio"));
        }
    }
    let auth = args.auth
        || match security.authorization.as_deref() {
            None | Some("disabled") => false,
            Some("enabled") => true,
            Some(other) => {
                return Err(format!(
                    "security.authorization must be 'enabled' or 'disabled', not {other:?}"
                ));
            }
        };
    let tls_file = &file.net.tls;
    let tls_mode =
        args.tls_mode.clone().or(tls_file.mode.clone()).unwrap_or_else(|| "disabled".into());
    folio_server::TlsMode::parse(&tls_mode)?;
    let tls = TlsSettings {
        mode: tls_mode.clone(),
        certificate_key_file: args
            .tls_certificate_key_file
            .clone()
            .or(tls_file.certificate_key_file.clone()),
        ca_file: args.tls_ca_file.clone().or(tls_file.ca_file.clone()),
        allow_connections_without_certificates: args.tls_allow_connections_without_certificates
            || tls_file.allow_connections_without_certificates.unwrap_or(false),
        allow_invalid_certificates: args.tls_allow_invalid_certificates
            || tls_file.allow_invalid_certificates.unwrap_or(false),
    };
    if args.tls_certificate_key_file_password.is_some()
        || tls_file.certificate_key_file_password.is_some()
    {
        return Err("--tlsCertificateKeyFilePassword is not supported: rustls reads only \
                    unencrypted private keys (decrypt the key with `openssl pkey`)"
            .into());
    }
    if tls.mode != "disabled" && tls.certificate_key_file.is_none() {
        return Err(format!("--tlsMode {} needs --tlsCertificateKeyFile", tls.mode));
    }
    if tls.mode == "disabled" && (tls.certificate_key_file.is_some() || tls.ca_file.is_some()) {
        return Err("TLS files are given but --tlsMode is disabled".into());
    }
    // MONGODB-X509 needs verified client certificates, hence a CA file; with one, it is on
    // unless authenticationMechanisms leaves it out (mongod's default list has it).
    if tls.ca_file.is_none() {
        auth_mechanisms.retain(|m| m != "MONGODB-X509");
    } else if !params.contains_key("authenticationMechanisms") {
        auth_mechanisms.push("MONGODB-X509".into());
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
    if let Some(url) = &storage_url {
        // The URL may carry a password: only where it points is reported.
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let shown = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        parsed.insert("storage", doc! { "url": format!("postgresql://{shown}") });
    }
    if let Some(config) = &args.config {
        parsed.insert("config", config.display().to_string());
    }
    if auth {
        parsed.insert("security", doc! { "authorization": "enabled" });
    }
    if tls.mode != "disabled"
        && let Ok(net) = parsed.get_document_mut("net")
    {
        let mut t = doc! { "mode": tls.mode.clone() };
        if let Some(f) = &tls.certificate_key_file {
            t.insert("certificateKeyFile", f.display().to_string());
        }
        if let Some(f) = &tls.ca_file {
            t.insert("CAFile", f.display().to_string());
        }
        net.insert("tls", t);
    }
    if let Some(mb) = oplog_size_mb
        && let Ok(r) = parsed.get_document_mut("replication")
    {
        r.insert("oplogSizeMB", mb);
    }
    let cmd_line = doc! { "argv": redact_argv(argv), "parsed": parsed };

    Ok(Settings {
        port,
        bind_ips,
        dbpath,
        in_memory: args.in_memory,
        storage_url,
        load_balanced: args.load_balanced || file.net.load_balanced.unwrap_or(false),
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
        cache_bytes,
        cmd_line,
        log,
        slow_ms,
        slow_op_sample_rate,
        profile_level,
        metrics_port,
        auth,
        auth_mechanisms,
        localhost_auth_bypass,
        tls,
    })
}

/// The command line with password values replaced by `<password>`, as mongod shows it.
fn redact_argv(argv: &[String]) -> Vec<String> {
    const SECRET: &[&str] = &["--tlsCertificateKeyFilePassword"];
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for a in argv {
        if hide_next {
            out.push("<password>".to_string());
            hide_next = false;
        } else if let Some((flag, _)) = a.split_once('=').filter(|(f, _)| SECRET.contains(f)) {
            out.push(format!("{flag}=<password>"));
        } else {
            hide_next = SECRET.contains(&a.as_str());
            out.push(a.clone());
        }
    }
    out
}

/// Whether every address is a loopback address (`localhost`, `127.0.0.0/8`, `::1`).
pub fn loopback_only(bind_ips: &[String]) -> bool {
    bind_ips.iter().all(|ip| {
        ip == "localhost" || ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
    })
}

/// The log settings from flags and `systemLog`.
fn log_settings(args: &ServeArgs, file: &SystemLogSection) -> Result<LogSettings, String> {
    let path = match (&args.logpath, file.destination.as_deref()) {
        (Some(p), _) => Some(p.clone()),
        (None, Some("file")) => Some(
            file.path
                .clone()
                .ok_or("systemLog.destination is file but systemLog.path is not set".to_string())?,
        ),
        (None, Some("syslog")) => {
            return Err("systemLog.destination: syslog is not supported; use file or leave it unset for standard error".into());
        }
        (None, Some(other)) => {
            return Err(format!("Bad value for systemLog.destination: {other:?} (file or syslog)"));
        }
        (None, None) if file.path.is_some() => {
            return Err("systemLog.path needs systemLog.destination: file".into());
        }
        (None, None) => None,
    };
    let rotate = match args.log_rotate.as_deref().or(file.log_rotate.as_deref()) {
        None | Some("rename") => LogRotate::Rename,
        Some("reopen") => LogRotate::Reopen,
        Some(other) => {
            return Err(format!("Bad value for --logRotate: {other:?} (rename or reopen)"));
        }
    };
    let append = args.logappend || file.log_append.unwrap_or(false);
    if rotate == LogRotate::Reopen && !append {
        // As mongod: reopening only makes sense when appending to what an outside tool left.
        return Err("--logRotate reopen requires --logappend".into());
    }
    if path.is_none() && (args.logappend || args.log_rotate.is_some()) {
        return Err("--logappend and --logRotate need --logpath".into());
    }
    Ok(LogSettings { path, append, rotate, quiet: args.quiet || file.quiet.unwrap_or(false) })
}

/// `slowms`, `slowOpSampleRate` and the profiling level from flags and `operationProfiling`.
fn profiling_settings(
    args: &ServeArgs,
    file: &ProfilingSection,
) -> Result<(u64, f64, i32), String> {
    let slow_ms = args.slowms.or(file.slow_op_threshold_ms).unwrap_or(100);
    let rate = args.slow_op_sample_rate.or(file.slow_op_sample_rate).unwrap_or(1.0);
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("Bad value for --slowOpSampleRate: {rate} (0.0 to 1.0)"));
    }
    let level = match (args.profile, file.mode.as_deref()) {
        (Some(n @ 0..=2), _) => n,
        (Some(n), _) => return Err(format!("Bad value for --profile: {n} (0, 1 or 2)")),
        (None, None | Some("off")) => 0,
        (None, Some("slowOp")) => 1,
        (None, Some("all")) => 2,
        (None, Some(other)) => {
            return Err(format!(
                "Bad value for operationProfiling.mode: {other:?} (off, slowOp or all)"
            ));
        }
    };
    // A negative threshold logs nothing as slow, as in mongod.
    Ok((u64::try_from(slow_ms).unwrap_or(u64::MAX), rate, level))
}

fn load_config(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    let de = serde_norway::Deserializer::from_str(&text);
    let mut unknown = Vec::new();
    let file: ConfigFile = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
        .map_err(|e| format!("invalid config file {}: {e}", path.display()))?;
    if !unknown.is_empty() {
        // The unknown key's full path, as mongod names it.
        return Err(format!(
            "invalid config file {}: Unrecognized option: {}",
            path.display(),
            unknown.join(", ")
        ));
    }
    Ok(file)
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
    fn cache_size_comes_from_the_flag_or_the_config_file_within_mongodb_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mongod.conf");
        std::fs::write(
            &path,
            "storage:\n  wiredTiger:\n    engineConfig:\n      cacheSizeGB: 0.5\n",
        )
        .unwrap();
        let from_file =
            resolve(&ServeArgs { config: Some(path.clone()), ..ServeArgs::default() }, &[])
                .expect("settings");
        assert_eq!(from_file.cache_bytes, Some(512 << 20));
        let flag =
            ServeArgs { config: Some(path), cache_size_gb: Some(2.0), ..ServeArgs::default() };
        assert_eq!(resolve(&flag, &[]).expect("settings").cache_bytes, Some(2 << 30));
        assert_eq!(resolve(&ServeArgs::default(), &[]).expect("settings").cache_bytes, None);
        for gb in [0.1, 20000.0, f64::NAN] {
            let bad = ServeArgs { cache_size_gb: Some(gb), ..ServeArgs::default() };
            let e = resolve(&bad, &[]).expect_err("out of bounds");
            assert!(e.contains("between 0.25 and 10000"), "{e}");
        }
        let in_memory =
            ServeArgs { cache_size_gb: Some(1.0), in_memory: true, ..ServeArgs::default() };
        assert!(resolve(&in_memory, &[]).expect_err("no cache").contains("--in-memory"));
        let other = dir.path().join("other.conf");
        std::fs::write(
            &other,
            "storage:\n  wiredTiger:\n    collectionConfig:\n      blockCompressor: zstd\n",
        )
        .unwrap();
        let e = resolve(&ServeArgs { config: Some(other), ..ServeArgs::default() }, &[])
            .expect_err("unknown key");
        assert!(e.contains("collectionConfig"), "{e}");
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
    fn conflicting_and_bad_settings_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ServeArgs { in_memory: true, dbpath: Some(dir.path().into()), ..args() };
        let e = resolve(&a, &[]).expect_err("in-memory with dbpath");
        assert!(e.contains("--in-memory") && e.contains("--dbpath"), "{e}");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("write");
        let e = resolve(&ServeArgs { dbpath: Some(file), ..args() }, &[]).expect_err("file");
        assert!(e.contains("is a file"), "{e}");
        for bad in [
            ServeArgs { logappend: true, ..args() },
            ServeArgs { log_rotate: Some("reopen".into()), logpath: Some("l".into()), ..args() },
            ServeArgs { log_rotate: Some("sideways".into()), logpath: Some("l".into()), ..args() },
            ServeArgs { slow_op_sample_rate: Some(1.5), ..args() },
            ServeArgs { profile: Some(3), ..args() },
        ] {
            assert!(resolve(&bad, &[]).is_err(), "{bad:?}");
        }
        let ok = ServeArgs {
            logpath: Some("l".into()),
            logappend: true,
            log_rotate: Some("reopen".into()),
            slowms: Some(-1),
            profile: Some(2),
            metrics_port: Some(9216),
            ..args()
        };
        let s = resolve(&ok, &[]).expect("resolve");
        assert_eq!(s.log.rotate, LogRotate::Reopen);
        assert_eq!((s.slow_ms, s.profile_level, s.metrics_port), (u64::MAX, 2, Some(9216)));
    }

    #[test]
    fn storage_url_is_exclusive_with_a_data_directory() {
        let url = "postgresql://folio:secret@db.example:5432/folio".to_string();
        let s = resolve(&ServeArgs { storage: Some(url.clone()), ..args() }, &[]).expect("ok");
        assert_eq!(s.storage_url.as_deref(), Some(url.as_str()));
        let shown = s.cmd_line.get_document("parsed").unwrap().get_document("storage").unwrap();
        assert_eq!(shown.get_str("url").unwrap(), "postgresql://db.example:5432/folio");
        for bad in [
            ServeArgs { storage: Some(url.clone()), in_memory: true, ..args() },
            ServeArgs { storage: Some(url.clone()), dbpath: Some("d".into()), ..args() },
            ServeArgs { storage: Some("mysql://h/db".into()), ..args() },
        ] {
            let e = resolve(&bad, &[]).expect_err("refused");
            assert!(e.contains("--storage"), "{e}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("folio.conf");
        std::fs::write(&path, "storage:\n  url: postgresql://h/db\n").expect("write");
        let s = resolve(&ServeArgs { config: Some(path), ..args() }, &[]).expect("file");
        assert_eq!(s.storage_url.as_deref(), Some("postgresql://h/db"));
    }

    #[test]
    fn config_file_is_read_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mongod.conf");
        std::fs::write(
            &path,
            "net:\n  port: 29000\n  bindIp: 0.0.0.0,127.0.0.1\nstorage:\n  dbPath: /var/lib/folio\n\
             replication:\n  replSetName: myset\nsetParameter:\n  enableTestCommands: true\n  \
             transactionLifetimeLimitSeconds: 30\nsystemLog:\n  destination: file\n  \
             path: /var/log/folio.log\n  logAppend: true\noperationProfiling:\n  mode: slowOp\n  \
             slowOpThresholdMs: 20\n",
        )
        .expect("write");
        let a = ServeArgs { config: Some(path.clone()), ..args() };
        let s = resolve(&a, &[]).expect("resolve");
        assert_eq!(s.port, 29000);
        assert_eq!(s.log.path, Some(PathBuf::from("/var/log/folio.log")));
        assert!(s.log.append);
        assert_eq!((s.slow_ms, s.profile_level), (20, 1));
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

        // Unknown keys are refused with their full name, as mongod refuses them.
        std::fs::write(&path, "net:\n  prot: 1\nprocessManagement:\n  fork: true\n")
            .expect("write");
        let e =
            resolve(&ServeArgs { config: Some(path.clone()), ..args() }, &[]).expect_err("unknown");
        assert!(e.contains("Unrecognized option") && e.contains("net.prot"), "{e}");
        assert!(e.contains("processManagement"), "{e}");
        std::fs::write(&path, "setParameter:\n  bogus: 1\n").expect("write");
        assert!(resolve(&ServeArgs { config: Some(path.clone()), ..args() }, &[]).is_err());
        std::fs::write(&path, "net: [unclosed\n").expect("write");
        assert!(resolve(&ServeArgs { config: Some(path), ..args() }, &[]).is_err());
        let missing = dir.path().join("missing.conf");
        assert!(resolve(&ServeArgs { config: Some(missing), ..args() }, &[]).is_err());
    }

    #[test]
    fn auth_settings() {
        let s = resolve(&args(), &[]).expect("resolve");
        assert!(!s.auth);
        assert!(s.localhost_auth_bypass);
        assert_eq!(s.auth_mechanisms, vec!["SCRAM-SHA-1".to_string(), "SCRAM-SHA-256".to_string()]);
        let a = ServeArgs {
            auth: true,
            set_parameter: vec![
                "authenticationMechanisms=SCRAM-SHA-256".into(),
                "enableLocalhostAuthBypass=false".into(),
            ],
            ..args()
        };
        let s = resolve(&a, &[]).expect("resolve");
        assert!(s.auth && !s.localhost_auth_bypass);
        assert_eq!(s.auth_mechanisms, vec!["SCRAM-SHA-256".to_string()]);
        let parsed = s.cmd_line.get_document("parsed").expect("parsed");
        assert_eq!(
            parsed.get_document("security").and_then(|d| d.get_str("authorization")).ok(),
            Some("enabled")
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mongod.conf");
        std::fs::write(&path, "security:\n  authorization: enabled\n").expect("write");
        assert!(
            resolve(&ServeArgs { config: Some(path.clone()), ..args() }, &[])
                .expect("resolve")
                .auth
        );
        std::fs::write(&path, "security:\n  authorization: maybe\n").expect("write");
        assert!(resolve(&ServeArgs { config: Some(path), ..args() }, &[]).is_err());
        for bad in [
            "authenticationMechanisms=PLAIN",
            "authenticationMechanisms=GSSAPI",
            "authenticationMechanisms=MONGODB-AWS",
            "authenticationMechanisms=MONGODB-OIDC",
            "authenticationMechanisms=SCRAM-SHA-512",
            "authenticationMechanisms=",
        ] {
            let a = ServeArgs { set_parameter: vec![bad.into()], ..args() };
            let e = resolve(&a, &[]).expect_err(bad);
            assert!(e.contains("authenticationMechanisms"), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_settings() {
        let a = ServeArgs {
            tls_mode: Some("requireTLS".into()),
            tls_certificate_key_file: Some("/etc/folio/server.pem".into()),
            tls_ca_file: Some("/etc/folio/ca.pem".into()),
            tls_allow_connections_without_certificates: true,
            ..args()
        };
        let s = resolve(&a, &[]).expect("resolve");
        assert_eq!(s.tls.mode, "requireTLS");
        assert!(s.tls.allow_connections_without_certificates && !s.tls.allow_invalid_certificates);
        let net =
            s.cmd_line.get_document("parsed").and_then(|p| p.get_document("net")).expect("net");
        assert_eq!(
            net.get_document("tls").and_then(|t| t.get_str("mode")).ok(),
            Some("requireTLS")
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mongod.conf");
        std::fs::write(
            &path,
            "net:\n  tls:\n    mode: preferTLS\n    certificateKeyFile: /k.pem\n    CAFile: /ca.pem\n    allowInvalidCertificates: true\n",
        )
        .expect("write");
        let s = resolve(&ServeArgs { config: Some(path), ..args() }, &[]).expect("resolve");
        assert_eq!(s.tls.mode, "preferTLS");
        assert_eq!(s.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(s.tls.allow_invalid_certificates);

        // A mode without a certificate, an unknown mode, files without a mode, and encrypted
        // keys are refused.
        for bad in [
            ServeArgs { tls_mode: Some("requireTLS".into()), ..args() },
            ServeArgs { tls_mode: Some("sometimes".into()), ..args() },
            ServeArgs { tls_certificate_key_file: Some("/k.pem".into()), ..args() },
            ServeArgs {
                tls_mode: Some("requireTLS".into()),
                tls_certificate_key_file: Some("/k.pem".into()),
                tls_certificate_key_file_password: Some("secret".into()),
                ..args()
            },
        ] {
            assert!(resolve(&bad, &[]).is_err(), "{bad:?}");
        }
        // Password flags never reach getCmdLineOpts.
        assert_eq!(
            redact_argv(&[
                "folio".into(),
                "--tlsCertificateKeyFilePassword".into(),
                "secret".into(),
                "--tlsCertificateKeyFilePassword=secret".into(),
            ]),
            vec![
                "folio".to_string(),
                "--tlsCertificateKeyFilePassword".into(),
                "<password>".into(),
                "--tlsCertificateKeyFilePassword=<password>".into(),
            ]
        );
    }

    #[test]
    fn loopback_addresses() {
        assert!(loopback_only(&["127.0.0.1".into(), "::1".into(), "localhost".into()]));
        assert!(!loopback_only(&["0.0.0.0".into()]));
        assert!(!loopback_only(&["127.0.0.1".into(), "192.168.1.10".into()]));
    }
}
