//! Options of API calls, named like the `mongodb` crate's `options` module.

use std::time::Duration;

use bson::{Bson, Document, doc};

/// Which version of a document `find_one_and_*` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnDocument {
    /// The document after the modification.
    After,
    /// The document before the modification (the default).
    #[default]
    Before,
}

/// The level of a read concern.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadConcernLevel {
    /// `local`.
    Local,
    /// `majority`.
    Majority,
    /// `linearizable`.
    Linearizable,
    /// `available`.
    Available,
    /// `snapshot`.
    Snapshot,
    /// Any other level, passed through.
    Custom(String),
}

impl ReadConcernLevel {
    /// The level's name as sent to the server.
    pub fn as_str(&self) -> &str {
        match self {
            ReadConcernLevel::Local => "local",
            ReadConcernLevel::Majority => "majority",
            ReadConcernLevel::Linearizable => "linearizable",
            ReadConcernLevel::Available => "available",
            ReadConcernLevel::Snapshot => "snapshot",
            ReadConcernLevel::Custom(s) => s,
        }
    }
}

/// A read concern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadConcern {
    /// The level.
    pub level: ReadConcernLevel,
}

impl ReadConcern {
    /// `{level: "local"}`.
    pub fn local() -> Self {
        ReadConcern { level: ReadConcernLevel::Local }
    }

    /// `{level: "majority"}`.
    pub fn majority() -> Self {
        ReadConcern { level: ReadConcernLevel::Majority }
    }

    /// `{level: "linearizable"}`.
    pub fn linearizable() -> Self {
        ReadConcern { level: ReadConcernLevel::Linearizable }
    }

    /// `{level: "available"}`.
    pub fn available() -> Self {
        ReadConcern { level: ReadConcernLevel::Available }
    }

    /// `{level: "snapshot"}`.
    pub fn snapshot() -> Self {
        ReadConcern { level: ReadConcernLevel::Snapshot }
    }

    /// Any level by name.
    pub fn custom(level: impl Into<String>) -> Self {
        ReadConcern { level: ReadConcernLevel::Custom(level.into()) }
    }

    /// The document sent as `readConcern`.
    pub fn to_document(&self) -> Document {
        doc! { "level": self.level.as_str() }
    }
}

/// The `w` of a write concern.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acknowledgment {
    /// A number of nodes.
    Nodes(u32),
    /// `"majority"`.
    Majority,
    /// A tag set name.
    Custom(String),
}

/// A write concern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteConcern {
    /// `w`.
    pub w: Option<Acknowledgment>,
    /// `wtimeout`.
    pub w_timeout: Option<Duration>,
    /// `j`.
    pub journal: Option<bool>,
}

impl WriteConcern {
    /// `{w: "majority"}`.
    pub fn majority() -> Self {
        WriteConcern { w: Some(Acknowledgment::Majority), ..WriteConcern::default() }
    }

    /// `{w: n}`.
    pub fn nodes(n: u32) -> Self {
        WriteConcern { w: Some(Acknowledgment::Nodes(n)), ..WriteConcern::default() }
    }

    /// `{w: "<tag>"}`.
    pub fn custom(tag: impl Into<String>) -> Self {
        WriteConcern { w: Some(Acknowledgment::Custom(tag.into())), ..WriteConcern::default() }
    }

    /// The document sent as `writeConcern`.
    pub fn to_document(&self) -> Document {
        let mut d = Document::new();
        match &self.w {
            Some(Acknowledgment::Nodes(n)) => {
                d.insert("w", i64::from(*n));
            }
            Some(Acknowledgment::Majority) => {
                d.insert("w", "majority");
            }
            Some(Acknowledgment::Custom(tag)) => {
                d.insert("w", tag.as_str());
            }
            None => {}
        }
        if let Some(t) = self.w_timeout {
            d.insert("wtimeout", t.as_millis() as i64);
        }
        if let Some(j) = self.journal {
            d.insert("j", j);
        }
        d
    }
}

/// Options of a transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransactionOptions {
    /// The read concern of the transaction (sent with its first statement).
    pub read_concern: Option<ReadConcern>,
    /// The write concern of the commit.
    pub write_concern: Option<WriteConcern>,
    /// `maxTimeMS` of the commit.
    pub max_commit_time: Option<Duration>,
}

impl TransactionOptions {
    /// A builder.
    pub fn builder() -> TransactionOptionsBuilder {
        TransactionOptionsBuilder::default()
    }
}

/// Builds [`TransactionOptions`].
#[derive(Clone, Debug, Default)]
pub struct TransactionOptionsBuilder(TransactionOptions);

impl TransactionOptionsBuilder {
    /// Sets the read concern.
    pub fn read_concern(mut self, rc: impl Into<Option<ReadConcern>>) -> Self {
        self.0.read_concern = rc.into();
        self
    }

    /// Sets the write concern.
    pub fn write_concern(mut self, wc: impl Into<Option<WriteConcern>>) -> Self {
        self.0.write_concern = wc.into();
        self
    }

    /// Sets the commit's time limit.
    pub fn max_commit_time(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.0.max_commit_time = t.into();
        self
    }

    /// The options.
    pub fn build(self) -> TransactionOptions {
        self.0
    }
}

/// Options of a session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionOptions {
    /// Options applied to every transaction of the session unless overridden.
    pub default_transaction_options: Option<TransactionOptions>,
}

/// Options of an index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexOptions {
    /// The index name (default: built from the key pattern, like `a_1_b_-1`).
    pub name: Option<String>,
    /// Whether keys must be unique.
    pub unique: Option<bool>,
    /// Whether documents without the field are left out.
    pub sparse: Option<bool>,
    /// Only documents matching this filter are indexed.
    pub partial_filter_expression: Option<Document>,
    /// TTL.
    pub expire_after: Option<Duration>,
}

impl IndexOptions {
    /// A builder.
    pub fn builder() -> IndexOptionsBuilder {
        IndexOptionsBuilder::default()
    }

    fn write_into(&self, d: &mut Document) {
        if let Some(u) = self.unique {
            d.insert("unique", u);
        }
        if let Some(s) = self.sparse {
            d.insert("sparse", s);
        }
        if let Some(p) = &self.partial_filter_expression {
            d.insert("partialFilterExpression", p.clone());
        }
        if let Some(t) = self.expire_after {
            d.insert("expireAfterSeconds", t.as_secs() as i64);
        }
    }
}

/// Builds [`IndexOptions`].
#[derive(Clone, Debug, Default)]
pub struct IndexOptionsBuilder(IndexOptions);

impl IndexOptionsBuilder {
    /// Sets the name.
    pub fn name(mut self, name: impl Into<Option<String>>) -> Self {
        self.0.name = name.into();
        self
    }

    /// Sets `unique`.
    pub fn unique(mut self, unique: impl Into<Option<bool>>) -> Self {
        self.0.unique = unique.into();
        self
    }

    /// Sets `sparse`.
    pub fn sparse(mut self, sparse: impl Into<Option<bool>>) -> Self {
        self.0.sparse = sparse.into();
        self
    }

    /// Sets `partialFilterExpression`.
    pub fn partial_filter_expression(mut self, filter: impl Into<Option<Document>>) -> Self {
        self.0.partial_filter_expression = filter.into();
        self
    }

    /// Sets the TTL.
    pub fn expire_after(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.0.expire_after = t.into();
        self
    }

    /// The options.
    pub fn build(self) -> IndexOptions {
        self.0
    }
}

/// An index: its key pattern and options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexModel {
    /// The key pattern, like `{a: 1, b: -1}`.
    pub keys: Document,
    /// The options.
    pub options: Option<IndexOptions>,
}

impl IndexModel {
    /// A builder.
    pub fn builder() -> IndexModelBuilder {
        IndexModelBuilder::default()
    }

    /// The index name: the given one, or MongoDB's default built from the key pattern.
    pub fn name(&self) -> String {
        if let Some(name) = self.options.as_ref().and_then(|o| o.name.clone()) {
            return name;
        }
        let parts: Vec<String> =
            self.keys.iter().map(|(k, v)| format!("{}_{}", k, key_direction(v))).collect();
        parts.join("_")
    }

    /// The index specification sent in `createIndexes`.
    pub(crate) fn to_spec(&self) -> Document {
        let mut d = doc! { "key": self.keys.clone(), "name": self.name() };
        if let Some(o) = &self.options {
            o.write_into(&mut d);
        }
        d
    }

    /// Parses a `listIndexes` entry.
    pub(crate) fn from_spec(spec: &Document) -> IndexModel {
        let keys = spec.get_document("key").cloned().unwrap_or_default();
        let options = IndexOptions {
            name: spec.get_str("name").ok().map(str::to_string),
            unique: spec.get_bool("unique").ok(),
            sparse: spec.get_bool("sparse").ok(),
            partial_filter_expression: spec.get_document("partialFilterExpression").ok().cloned(),
            expire_after: super::error::reply_i64(spec, "expireAfterSeconds")
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        };
        IndexModel { keys, options: Some(options) }
    }
}

/// How a key pattern value shows in an index name (`1`, `-1`, `text`...).
fn key_direction(v: &Bson) -> String {
    match v {
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        Bson::Double(f) if f.fract() == 0.0 => format!("{}", *f as i64),
        Bson::Double(f) => f.to_string(),
        Bson::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Builds an [`IndexModel`].
#[derive(Clone, Debug, Default)]
pub struct IndexModelBuilder(IndexModel);

impl IndexModelBuilder {
    /// Sets the key pattern.
    pub fn keys(mut self, keys: Document) -> Self {
        self.0.keys = keys;
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: impl Into<Option<IndexOptions>>) -> Self {
        self.0.options = options.into();
        self
    }

    /// The model.
    pub fn build(self) -> IndexModel {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_index_names_follow_the_key_pattern() {
        let m = IndexModel::builder().keys(doc! { "a": 1, "b.c": -1, "t": "text" }).build();
        assert_eq!(m.name(), "a_1_b.c_-1_t_text");
        let named = IndexModel::builder()
            .keys(doc! { "a": 1 })
            .options(IndexOptions::builder().name("by_a".to_string()).unique(true).build())
            .build();
        assert_eq!(named.to_spec(), doc! { "key": { "a": 1 }, "name": "by_a", "unique": true });
    }

    #[test]
    fn write_concern_documents() {
        assert_eq!(WriteConcern::majority().to_document(), doc! { "w": "majority" });
        let wc = WriteConcern { journal: Some(true), ..WriteConcern::nodes(1) };
        assert_eq!(wc.to_document(), doc! { "w": 1_i64, "j": true });
        assert_eq!(ReadConcern::snapshot().to_document(), doc! { "level": "snapshot" });
    }
}
