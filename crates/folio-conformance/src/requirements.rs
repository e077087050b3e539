//! `runOnRequirements`: deciding whether a test applies to the server under test.
//!
//! A list of requirements holds when any one of its entries holds; an entry holds when each of its fields
//! does. The server is described once per run ([`ServerDescription`], built from `buildInfo`, `hello` and
//! `getParameter`), so the decision is a pure function that unit tests can check against the counts the
//! spec tests' README gives for MongoDB 8.0 as a one-member replica set.

use bson::Document;

use crate::model::RunOnRequirement;

/// What the runner knows of the server under test.
#[derive(Debug, Clone)]
pub struct ServerDescription {
    /// `buildInfo.versionArray`, padded to three components.
    pub version: Vec<u32>,
    /// `single`, `replicaset`, `sharded`, `sharded-replicaset` or `load-balanced`.
    pub topology: String,
    /// Whether connections must authenticate.
    pub auth: bool,
    /// Whether this is a serverless deployment.
    pub serverless: bool,
    /// Parameters from `getParameter: "*"`, when available.
    pub server_parameters: Document,
}

impl ServerDescription {
    /// What Folio claims to be: MongoDB 8.0.0 as a one-member replica set, no auth (for unit tests).
    #[cfg(test)]
    pub fn folio_default() -> Self {
        Self {
            version: vec![8, 0, 0],
            topology: "replicaset".into(),
            auth: false,
            serverless: false,
            server_parameters: Document::new(),
        }
    }
}

/// Parses a version such as `"4.3.1"` or `"8.0"` into numeric components (missing ones are 0).
pub fn parse_version(s: &str) -> Vec<u32> {
    let mut v: Vec<u32> = s.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    while v.len() < 3 {
        v.push(0);
    }
    v
}

/// Checks a list of requirements (any must hold); `Err` carries why none does, for the skip message.
pub fn check_any(
    reqs: Option<&[RunOnRequirement]>,
    server: &ServerDescription,
) -> Result<(), String> {
    let Some(reqs) = reqs else { return Ok(()) };
    if reqs.is_empty() {
        return Ok(());
    }
    let mut reasons = Vec::new();
    for r in reqs {
        match check_one(r, server) {
            Ok(()) => return Ok(()),
            Err(e) => reasons.push(e),
        }
    }
    Err(reasons.join("; or "))
}

/// Checks one requirement entry: all its fields must hold.
pub fn check_one(r: &RunOnRequirement, server: &ServerDescription) -> Result<(), String> {
    let version = &server.version;
    if let Some(min) = &r.min_server_version
        && version < &parse_version(min)
    {
        return Err(format!("needs server >= {min}"));
    }
    if let Some(max) = &r.max_server_version
        && version > &parse_version(max)
    {
        return Err(format!("needs server <= {max}"));
    }
    if let Some(tops) = &r.topologies
        && !tops.iter().any(|t| t == &server.topology)
    {
        return Err(format!("needs topology {}", tops.join("/")));
    }
    match r.serverless.as_deref() {
        Some("require") if !server.serverless => return Err("needs serverless".into()),
        Some("forbid") if server.serverless => return Err("forbids serverless".into()),
        _ => {}
    }
    if let Some(auth) = r.auth
        && auth != server.auth
    {
        return Err(if auth { "needs auth".into() } else { "needs no auth".into() });
    }
    if r.auth_mechanism.is_some() && !server.auth {
        return Err("needs an auth mechanism".into());
    }
    if let Some(csfle) = &r.csfle
        && csfle != &bson::Bson::Boolean(false)
    {
        return Err("needs client-side field level encryption".into());
    }
    if let Some(params) = &r.server_parameters {
        for (k, v) in params {
            let actual = server.server_parameters.get(k);
            if crate::matcher::values_equal(v, actual).is_err() {
                return Err(format!("needs server parameter {k} = {v}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AREAS, area_files, load};
    use std::path::PathBuf;

    /// The spec test directory, when this machine has it.
    fn spec_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("FOLIO_SPEC_TESTS").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests")
        });
        dir.is_dir().then_some(dir)
    }

    /// (tests, applicable) per area.
    fn counts(dir: &std::path::Path, area: &str) -> (usize, usize) {
        let server = ServerDescription::folio_default();
        let (mut total, mut applicable) = (0, 0);
        for f in area_files(dir, area).unwrap() {
            let file = load(&f).unwrap();
            for t in &file.tests {
                total += 1;
                if crate::runner::skip_reason(&file, t, &server).is_none() {
                    applicable += 1;
                }
            }
        }
        (total, applicable)
    }

    #[test]
    fn every_file_parses_and_counts_match_the_readme() {
        let Some(dir) = spec_dir() else {
            eprintln!("spec tests absent: skipped");
            return;
        };
        let expected = [
            ("transactions", 258, 177),
            ("sessions", 39, 33),
            ("retryable-writes", 142, 119),
            ("crud", 487, 384),
            ("causal-consistency", 18, 18),
            ("change-streams", 89, 66),
            ("collection-management", 11, 10),
            ("index-management", 19, 18),
            ("run-command", 21, 17),
            // Without the server's parameters (`getParameter`), the tests that require some
            // are not applicable here; the run checks them against the server's.
            ("versioned-api", 41, 37),
            // Not in the shared copy; a driver's checkout has it.
            ("gridfs", 0, 0),
        ];
        assert_eq!(AREAS.len(), expected.len());
        for (area, tests, applicable) in expected {
            assert_eq!(counts(&dir, area), (tests, applicable), "{area}");
        }
    }

    #[test]
    fn versions_compare_with_padding() {
        assert_eq!(parse_version("4.3.1"), vec![4, 3, 1]);
        assert_eq!(parse_version("8.0"), vec![8, 0, 0]);
        let s = ServerDescription::folio_default();
        let req = |min: Option<&str>, max: Option<&str>| RunOnRequirement {
            min_server_version: min.map(Into::into),
            max_server_version: max.map(Into::into),
            ..Default::default()
        };
        assert!(check_one(&req(Some("8.0"), None), &s).is_ok());
        assert!(check_one(&req(Some("8.0.1"), None), &s).is_err());
        assert!(check_one(&req(None, Some("8.0.0")), &s).is_ok());
        assert!(check_one(&req(None, Some("7.99.99")), &s).is_err());
    }

    #[test]
    fn any_entry_suffices_and_all_fields_must_hold() {
        let s = ServerDescription::folio_default();
        let sharded =
            RunOnRequirement { topologies: Some(vec!["sharded".into()]), ..Default::default() };
        let rs =
            RunOnRequirement { topologies: Some(vec!["replicaset".into()]), ..Default::default() };
        assert!(check_any(Some(std::slice::from_ref(&sharded)), &s).is_err());
        assert!(check_any(Some(&[sharded, rs.clone()]), &s).is_ok());
        let rs_auth = RunOnRequirement { auth: Some(true), ..rs.clone() };
        assert!(check_any(Some(&[rs_auth]), &s).is_err());
        let serverless = RunOnRequirement { serverless: Some("require".into()), ..rs.clone() };
        assert!(check_any(Some(&[serverless]), &s).is_err());
        let forbid = RunOnRequirement { serverless: Some("forbid".into()), ..rs };
        assert!(check_any(Some(&[forbid]), &s).is_ok());
        assert!(check_any(None, &s).is_ok());
    }
}
