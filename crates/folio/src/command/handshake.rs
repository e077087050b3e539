//! Handshake and diagnostic commands (minimal versions; the full set arrives with the server).

use bson::{Document, doc};

use super::{Connection, Service};
use crate::error::Result;

/// `hello`.
pub fn hello(svc: &Service, conn: &mut Connection, _cmd: &Document) -> Result<Document> {
    let o = svc.options();
    Ok(doc! {
        "isWritablePrimary": true,
        "secondary": false,
        "setName": o.repl_set_name.clone(),
        "hosts": [o.advertise_host.clone()],
        "me": o.advertise_host.clone(),
        "primary": o.advertise_host.clone(),
        "logicalSessionTimeoutMinutes": 30,
        "minWireVersion": 0,
        "maxWireVersion": 25,
        "maxBsonObjectSize": 16_777_216,
        "maxMessageSizeBytes": 48_000_000,
        "maxWriteBatchSize": 100_000,
        "localTime": bson::DateTime::now(),
        "connectionId": conn.id as i64,
        "readOnly": false,
    })
}

/// `isMaster`.
pub fn is_master(svc: &Service, conn: &mut Connection, cmd: &Document) -> Result<Document> {
    let mut d = hello(svc, conn, cmd)?;
    d.remove("isWritablePrimary");
    d.insert("ismaster", true);
    Ok(d)
}

/// `buildInfo`.
pub fn build_info(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "version": "8.0.0", "versionArray": [8, 0, 0, 0], "maxBsonObjectSize": 16_777_216 })
}

/// `ping`.
pub fn ping(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(Document::new())
}

/// `getParameter`.
pub fn get_parameter(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "featureCompatibilityVersion": { "version": "8.0" } })
}

/// `getCmdLineOpts`.
pub fn get_cmd_line_opts(svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "argv": [], "parsed": svc.options().cmd_line.clone() })
}

/// `serverStatus`.
pub fn server_status(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "process": "folio", "version": "8.0.0" })
}

/// `hostInfo`.
pub fn host_info(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "system": {}, "os": {}, "extra": {} })
}

/// `connectionStatus`.
pub fn connection_status(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "authInfo": { "authenticatedUsers": [], "authenticatedUserRoles": [] } })
}

/// `whatsmyuri`.
pub fn whatsmyuri(_svc: &Service, c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "you": c.remote.clone() })
}

/// `getLog`.
pub fn get_log(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    Ok(doc! { "totalLinesWritten": 0, "log": [] })
}

/// `replSetGetStatus`.
pub fn repl_set_get_status(
    svc: &Service,
    _c: &mut Connection,
    _cmd: &Document,
) -> Result<Document> {
    Ok(doc! { "set": svc.options().repl_set_name.clone(), "myState": 1 })
}

/// `listCommands`.
pub fn list_commands(_svc: &Service, _c: &mut Connection, _cmd: &Document) -> Result<Document> {
    let mut commands = Document::new();
    for c in super::table::COMMANDS {
        commands.insert(c.name, doc! { "adminOnly": c.admin_only });
    }
    Ok(doc! { "commands": commands })
}
