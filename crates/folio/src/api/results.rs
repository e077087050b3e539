//! Results of write operations, named like the `mongodb` crate's `results` module.

use std::collections::HashMap;

use bson::Bson;

/// The result of `insert_one`.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertOneResult {
    /// The `_id` of the inserted document.
    pub inserted_id: Bson,
}

/// The result of `insert_many`.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertManyResult {
    /// The `_id` of each inserted document, by its position in the input.
    pub inserted_ids: HashMap<usize, Bson>,
}

/// The result of `update_one`, `update_many` and `replace_one`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateResult {
    /// How many documents matched the filter.
    pub matched_count: u64,
    /// How many documents were changed.
    pub modified_count: u64,
    /// The `_id` of the upserted document, if one was inserted.
    pub upserted_id: Option<Bson>,
}

/// The result of `delete_one` and `delete_many`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteResult {
    /// How many documents were deleted.
    pub deleted_count: u64,
}

/// The result of `create_index`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateIndexResult {
    /// The index name.
    pub index_name: String,
}

/// The result of `create_indexes`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateIndexesResult {
    /// The index names, in request order.
    pub index_names: Vec<String>,
}

/// The counts of a `bulk_write`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SummaryBulkWriteResult {
    /// Documents inserted.
    pub inserted_count: i64,
    /// Documents matched by updates and replacements.
    pub matched_count: i64,
    /// Documents changed by updates and replacements.
    pub modified_count: i64,
    /// Documents upserted.
    pub upserted_count: i64,
    /// Documents deleted.
    pub deleted_count: i64,
    /// The `_id` of each inserted document, by operation index.
    pub inserted_ids: HashMap<usize, Bson>,
    /// The `_id` of each upserted document, by operation index.
    pub upserted_ids: HashMap<usize, Bson>,
}
