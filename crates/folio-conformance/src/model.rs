//! The typed model of a unified-format test file.
//!
//! Files are JSON in MongoDB extended JSON (`{"$numberLong": "1"}`, `{"$oid": ...}`), so a file is first read
//! with `serde_json`, converted to [`Bson`] (which understands extended JSON), and only then deserialized into
//! these types. Parts whose shape depends on the operation (arguments, entity descriptions, expected results)
//! stay as BSON and are interpreted by the runner when it executes them: the model only fixes the structure
//! every test shares.

use std::path::Path;

use bson::{Bson, Document};
use serde::{Deserialize, Deserializer};

/// One unified-format test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFile {
    /// What the file tests.
    pub description: String,
    /// The schema version the file was written for, e.g. `"1.4"`.
    pub schema_version: String,
    /// Requirements every test of the file shares (any one of them must hold).
    #[serde(default)]
    pub run_on_requirements: Option<Vec<RunOnRequirement>>,
    /// Entities created before each test.
    #[serde(default)]
    pub create_entities: Vec<Document>,
    /// Collections and their contents set up before each test.
    #[serde(default)]
    pub initial_data: Vec<CollectionData>,
    /// The tests.
    pub tests: Vec<TestCase>,
}

/// One `runOnRequirements` entry: all of its fields must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOnRequirement {
    /// Lowest server version, inclusive.
    pub min_server_version: Option<String>,
    /// Highest server version, inclusive.
    pub max_server_version: Option<String>,
    /// Topologies the test can run on.
    pub topologies: Option<Vec<String>>,
    /// `require`, `forbid` or `allow`.
    pub serverless: Option<String>,
    /// Whether the server must (true) or must not (false) require authentication.
    pub auth: Option<bool>,
    /// Server parameters that must have these values.
    pub server_parameters: Option<Document>,
    /// Whether client-side field level encryption must be available.
    pub csfle: Option<Bson>,
    /// Authentication mechanisms the server must support.
    pub auth_mechanism: Option<String>,
}

/// The contents of one collection, for `initialData` and `outcome`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionData {
    /// The collection's name.
    pub collection_name: String,
    /// The database's name.
    pub database_name: String,
    /// Options for `create` when the collection is set up.
    pub create_options: Option<Document>,
    /// The documents, in `_id` order.
    pub documents: Vec<Document>,
}

/// One test of a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCase {
    /// The test's name, unique within its file.
    pub description: String,
    /// Requirements of this test on top of the file's.
    pub run_on_requirements: Option<Vec<RunOnRequirement>>,
    /// When present the test is always skipped, for this reason.
    pub skip_reason: Option<String>,
    /// The operations, run in order.
    pub operations: Vec<Operation>,
    /// The command (or connection pool) events each observed client must have seen.
    pub expect_events: Option<Vec<ExpectedEventsForClient>>,
    /// The collections' contents after the test.
    pub outcome: Option<Vec<CollectionData>>,
}

/// One operation of a test.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The operation's name, e.g. `insertOne`.
    pub name: String,
    /// The entity it runs on, or `testRunner` for the special test operations.
    pub object: String,
    /// The operation's arguments.
    pub arguments: Option<Document>,
    /// The error the operation must fail with.
    pub expect_error: Option<Document>,
    /// The result the operation must return; `Some(Null)` when the file says `null`.
    #[serde(default, deserialize_with = "present")]
    pub expect_result: Option<Bson>,
    /// Entity name under which to save the result.
    pub save_result_as_entity: Option<String>,
    /// Ignore whatever the operation returns.
    #[serde(default)]
    pub ignore_result_and_error: bool,
}

/// The events one client must have observed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedEventsForClient {
    /// The client entity.
    pub client: String,
    /// `command` (the default) or `cmap`.
    pub event_type: Option<String>,
    /// The expected events, each a one-key document such as `{commandStartedEvent: {...}}`.
    pub events: Vec<Document>,
    /// Whether more events than expected may have been observed after the expected ones.
    #[serde(default)]
    pub ignore_extra_events: bool,
}

/// Deserializes a field that is present (possibly `null`) into `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bson>, D::Error> {
    Bson::deserialize(d).map(Some)
}

/// Reads and parses one test file.
pub fn load(path: &Path) -> Result<TestFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the text of one test file.
pub fn parse(text: &str) -> Result<TestFile, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let bson = Bson::try_from(json).map_err(|e| format!("invalid extended JSON: {e}"))?;
    bson::deserialize_from_bson(bson).map_err(|e| format!("not a unified test file: {e}"))
}

/// The test areas, i.e. the folders of the spec test directory this runner knows.
pub const AREAS: [&str; 11] = [
    "transactions",
    "sessions",
    "retryable-writes",
    "crud",
    "causal-consistency",
    "change-streams",
    "collection-management",
    "index-management",
    "run-command",
    "versioned-api",
    "gridfs",
];

/// Lists the `.json` files of one area, sorted by name; an area the spec test directory does not
/// have has none (the shared copy holds the areas Folio is checked against, a driver's checkout
/// may hold more).
pub fn area_files(spec_dir: &Path, area: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let dir = spec_dir.join(area);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether a test (or its file) requires an authenticating server (`auth: true` in
/// `runOnRequirements`).
pub fn requires_auth(file: &TestFile, test: &TestCase) -> bool {
    [file.run_on_requirements.as_deref(), test.run_on_requirements.as_deref()]
        .into_iter()
        .flatten()
        .any(|rs| !rs.is_empty() && rs.iter().all(|r| r.auth == Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
        "description": "d", "schemaVersion": "1.3",
        "createEntities": [{"client": {"id": "client0"}}],
        "tests": [{
            "description": "t",
            "operations": [
                {"name": "findOne", "object": "collection0", "expectResult": null},
                {"name": "insertOne", "object": "collection0",
                 "arguments": {"document": {"_id": {"$numberLong": "7"}}}}
            ],
            "outcome": [{"collectionName": "c", "databaseName": "d", "documents": []}]
        }]
    }"#;

    #[test]
    fn null_expect_result_differs_from_absent_and_extended_json_is_decoded() {
        let f = parse(FILE).unwrap();
        let ops = &f.tests[0].operations;
        assert_eq!(ops[0].expect_result, Some(Bson::Null));
        assert_eq!(ops[1].expect_result, None);
        let doc = ops[1].arguments.as_ref().unwrap().get_document("document").unwrap();
        assert_eq!(doc.get("_id"), Some(&Bson::Int64(7)));
        assert!(f.run_on_requirements.is_none());
        assert_eq!(f.tests[0].outcome.as_ref().unwrap()[0].documents.len(), 0);
    }

    #[test]
    fn malformed_files_are_reported_not_panicked_on() {
        assert!(parse("{").unwrap_err().contains("invalid JSON"));
        assert!(parse(r#"{"description": "x"}"#).unwrap_err().contains("not a unified test file"));
    }
}
