//! Errors as MongoDB reports them.
//!
//! Every failure that can reach a client is an [`Error`]: a MongoDB error code (which fixes the
//! `codeName`), a human message, and the error labels the server attaches. Internal failures
//! (storage I/O) use [`Code::InternalError`] so that even they carry a codeName.
//!
//! Errors about the client's input and errors about stored data are kept apart: a BSON
//! decoding error converts to InvalidBSON (22) because that is what bad input is, while every
//! read of stored bytes goes through [`stored_document`], which reports a document that does
//! not decode as DataCorruptionDetected (296), as MongoDB does for a corrupt record.
//! Keeping one error type for the whole core means the command layer never has to guess how to
//! translate a lower layer's failure: the code is decided where the failure is understood.

use std::fmt;

/// MongoDB error codes used by Folio, with their codeNames (from MongoDB's `error_codes.yml`).
macro_rules! codes {
    ($($name:ident = $num:literal $([$($category:ident),*])?,)*) => {
        /// A MongoDB error code. The variant name is the `codeName`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Code {
            $($name,)*
            /// A code Folio does not name itself (e.g. one requested through a fail point).
            Other(i32),
        }

        impl Code {
            /// The numeric code.
            pub fn number(self) -> i32 {
                match self {
                    $(Code::$name => $num,)*
                    Code::Other(n) => n,
                }
            }

            /// The codeName. A code without a name of its own is `Location<code>`, as MongoDB
            /// names its numbered assertion codes; 0 has none.
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $(Code::$name => std::borrow::Cow::Borrowed(stringify!($name)),)*
                    Code::Other(0) => std::borrow::Cow::Borrowed(""),
                    Code::Other(n) => std::borrow::Cow::Owned(format!("Location{n}")),
                }
            }

            /// Looks a numeric code up.
            pub fn from_number(n: i32) -> Code {
                match n {
                    $($num => Code::$name,)*
                    n => Code::Other(n),
                }
            }

            /// The categories MongoDB's `error_codes.yml` puts the code in (as far as Folio's
            /// label and error rules need them).
            pub fn categories(self) -> &'static [Category] {
                match self {
                    $(Code::$name => &[$($(Category::$category),*)?],)*
                    Code::Other(_) => &[],
                }
            }
        }
    };
}

/// A category of error codes, written next to each code in the table below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// MongoDB's `RetriableError`: a retryable write (or commit/abort) that fails with it gets
    /// the RetryableWriteError label; a statement inside a transaction gets
    /// TransientTransactionError.
    Retryable,
    /// Always TransientTransactionError inside a transaction: the transaction can be retried
    /// as a whole (write conflicts, lock timeouts, snapshot errors, prepared conflicts).
    TransientInTxn,
    /// Ends a whole write command instead of becoming one statement's write error (time limits,
    /// interruption, a session's transaction state).
    EndsCommand,
    /// Ends a write command inside a transaction (the transaction cannot go on).
    EndsCommandInTxn,
}

impl Code {
    /// Whether the code is in `category`.
    pub fn is(self, category: Category) -> bool {
        self.categories().contains(&category)
    }

    /// MongoDB's `RetriableError` category.
    pub fn is_retryable(self) -> bool {
        self.is(Category::Retryable)
    }

    /// Whether the code is always transient inside a transaction.
    pub fn is_transient_in_txn(self) -> bool {
        self.is(Category::TransientInTxn)
    }
}

codes! {
    OK = 0,
    InternalError = 1,
    BadValue = 2,
    NoSuchKey = 4,
    GraphContainsCycle = 5,
    HostUnreachable = 6 [Retryable],
    HostNotFound = 7 [Retryable],
    UnknownError = 8,
    FailedToParse = 9,
    CannotMutateObject = 10,
    UserNotFound = 11,
    UnsupportedFormat = 12,
    Unauthorized = 13,
    TypeMismatch = 14,
    Overflow = 15,
    InvalidLength = 16,
    ProtocolError = 17,
    AuthenticationFailed = 18,
    MechanismUnavailable = 334,
    Location51002 = 51002,
    Location51003 = 51003,
    InvalidRoleModification = 49,
    Location40414 = 40414,
    IllegalOperation = 20,
    EmptyArrayOperation = 21,
    InvalidBSON = 22,
    LockTimeout = 24 [TransientInTxn, EndsCommandInTxn],
    NamespaceNotFound = 26,
    IndexNotFound = 27,
    PathNotViable = 28,
    NonExistentPath = 29,
    InvalidPath = 30,
    RoleNotFound = 31,
    ConflictingUpdateOperators = 40,
    CursorNotFound = 43,
    NamespaceExists = 48,
    MaxTimeMSExpired = 50 [EndsCommand],
    DollarPrefixedFieldName = 52,
    InvalidIdField = 53,
    NotSingleValueField = 54,
    InvalidDBRef = 55,
    EmptyFieldName = 56,
    DottedFieldName = 57,
    CommandNotFound = 59,
    ImmutableField = 66,
    CannotCreateIndex = 67,
    IndexAlreadyExists = 68,
    InvalidOptions = 72,
    FailPointSetFailed = 131,
    InvalidNamespace = 73,
    IndexOptionsConflict = 85,
    IndexKeySpecsConflict = 86,
    NetworkTimeout = 89 [Retryable],
    CommandFailed = 125,
    OperationFailed = 96,
    UnknownReplWriteConcern = 79,
    UnsatisfiableWriteConcern = 100,
    WriteConflict = 112 [TransientInTxn, EndsCommandInTxn],
    CommandNotSupported = 115,
    ConflictingOperationInProgress = 117,
    IncompleteTransactionHistory = 217,
    DocumentValidationFailure = 121,
    NotImplemented = 238,
    NoSuchSession = 206,
    TransactionTooOld = 225 [EndsCommand],
    SnapshotUnavailable = 246 [TransientInTxn, EndsCommandInTxn],
    NoSuchTransaction = 251 [EndsCommand],
    TransactionCommitted = 256 [EndsCommand],
    TransactionTooLarge = 257,
    ExceededTimeLimit = 262 [Retryable],
    OperationNotSupportedInTransaction = 263,
    NoMatchingDocument = 47,
    InvalidResumeToken = 260,
    ChangeStreamFatalError = 280,
    ChangeStreamHistoryLost = 286,
    PreparedTransactionInProgress = 267 [TransientInTxn],
    TransactionExceededLifetimeLimitSeconds = 290,
    NoQueryExecutionPlans = 291,
    QueryExceededMemoryLimitNoDiskUseAllowed = 292,
    DataCorruptionDetected = 296,
    ExceededMemoryLimit = 146,
    Location4568 = 4568,
    Location13548 = 13548,
    Location17217 = 17217,
    Location4031700 = 4031700,
    InvalidIndexSpecificationOption = 197,
    CommandNotSupportedOnView = 166,
    OptionNotSupportedOnView = 167,
    InvalidPipelineOperator = 168,
    InvalidViewDefinition = 182,
    ViewDepthLimitExceeded = 149,
    CannotIndexParallelArrays = 171,
    ShutdownInProgress = 91 [Retryable],
    PrimarySteppedDown = 189 [Retryable],
    ReadConcernMajorityNotAvailableYet = 134 [Retryable],
    NetworkInterfaceExceededTimeLimit = 202 [Retryable],
    SnapshotTooOld = 239 [TransientInTxn, EndsCommandInTxn],
    LoadBalancerSupportMismatch = 354,
    NotWritablePrimary = 10107 [Retryable],
    BSONObjectTooLarge = 10334,
    InterruptedAtShutdown = 11600 [Retryable],
    Interrupted = 11601 [EndsCommand],
    InterruptedDueToReplStateChange = 11602 [Retryable],
    NotPrimaryNoSecondaryOk = 13435 [Retryable],
    NotPrimaryOrSecondary = 13436 [Retryable],
    DuplicateKey = 11000,
    ConversionFailure = 241,
    Location15952 = 15952,
    Location15955 = 15955,
    Location15956 = 15956,
    Location15957 = 15957,
    Location15958 = 15958,
    Location16755 = 16755,
    Location17419 = 17419,
    Location31254 = 31254,
    SearchNotEnabled = 31082,
    Location40234 = 40234,
    Location40323 = 40323,
    Location40324 = 40324,
    Location40415 = 40415,
    Location40602 = 40602,
    Location40674 = 40674,
    Location15975 = 15975,
    Location28667 = 28667,
    Location28724 = 28724,
    Location31250 = 31250,
    Location31249 = 31249,
    Location31252 = 31252,
    Location31255 = 31255,
    Location31256 = 31256,
    Location31257 = 31257,
    Location31258 = 31258,
    Location31259 = 31259,
    Location31272 = 31272,
    Location31273 = 31273,
    Location31277 = 31277,
    Location31253 = 31253,
    Location31274 = 31274,
    Location31275 = 31275,
    Location31276 = 31276,
    Location31394 = 31394,
    Location31395 = 31395,
    Location51246 = 51246,
    Location51270 = 51270,
    Location40352 = 40352,
    Location40353 = 40353,
    Location51024 = 51024,
    Location51091 = 51091,
    Location15983 = 15983,
    Location16020 = 16020,
    Location16410 = 16410,
    Location16872 = 16872,
    Location17276 = 17276,
    Location4161100 = 4161100,
    Location4161101 = 4161101,
    Location4161102 = 4161102,
    Location4161106 = 4161106,
    Location40228 = 40228,
    Location40272 = 40272,
    Location31120 = 31120,
    Location31002 = 31002,
    Location51272 = 51272,
    Location15969 = 15969,
    Location40231 = 40231,
    Location51075 = 51075,
    Location51108 = 51108,
    APIVersionError = 322,
    APIStrictError = 323,
    APIDeprecationError = 324,
    APIMismatchError = 325,
    ClientMetadataCannotBeMutated = 186,
    Location4886600 = 4886600,
    Location31368 = 31368,
    Location498870 = 498870,
    Location31372 = 31372,
    Location31382 = 31382,
    InvalidUUID = 207,
    Location40571 = 40571,
    Location17385 = 17385,
    Location31319 = 31319,
    Location31320 = 31320,
    Location31321 = 31321,
    Location5107200 = 5107200,
    Location5107201 = 5107201,
    SocketException = 9001 [Retryable],
}

/// The labels MongoDB attaches to errors, as constants so their spelling lives in one place.
pub mod labels {
    /// The whole transaction may be retried.
    pub const TRANSIENT_TRANSACTION_ERROR: &str = "TransientTransactionError";
    /// The write may be retried.
    pub const RETRYABLE_WRITE_ERROR: &str = "RetryableWriteError";
    /// The outcome of a commit is unknown (drivers add it; the server never does).
    pub const UNKNOWN_TRANSACTION_COMMIT_RESULT: &str = "UnknownTransactionCommitResult";
}

/// A MongoDB-style error: code, message, labels and optional extra reply fields
/// (such as `keyPattern`/`keyValue` for duplicate keys, or `errInfo`).
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    /// The error code; its name is the codeName.
    pub code: Code,
    /// The message (`errmsg`).
    pub message: String,
    /// Error labels, in the order they were added.
    pub labels: Vec<String>,
    /// Extra fields to merge into the error reply or write error (e.g. `keyPattern`, `errInfo`).
    pub extra: Option<Box<bson::Document>>,
}

impl Error {
    /// The unknown-field error of MongoDB's strict parsers (40415, `Location40415` as MongoDB
    /// names it) for the field at `path` (`find.fliter`, `$merge.bogus`, ...).
    pub fn unknown_field(path: &str) -> Error {
        Error::new(Code::Location40415, format!("BSON field '{path}' is an unknown field."))
    }

    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), labels: Vec::new(), extra: None }
    }

    /// Adds a label (once).
    pub fn with_label(mut self, label: &str) -> Self {
        self.add_label(label);
        self
    }

    /// Adds a label in place (once).
    pub fn add_label(&mut self, label: &str) {
        if !self.has_label(label) {
            self.labels.push(label.to_string());
        }
    }

    /// Whether the error carries `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    /// Attaches extra reply fields.
    pub fn with_extra(mut self, extra: bson::Document) -> Self {
        self.extra = Some(Box::new(extra));
        self
    }

    /// The numeric code.
    pub fn code_number(&self) -> i32 {
        self.code.number()
    }

    /// The codeName.
    pub fn code_name(&self) -> std::borrow::Cow<'static, str> {
        self.code.name()
    }

    /// Whether this is a write conflict between transactions.
    pub fn is_write_conflict(&self) -> bool {
        self.code == Code::WriteConflict
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code.name(), self.code.number(), self.message)
    }
}

impl std::error::Error for Error {}

/// The result type of the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] with a code and a formatted message: `err!(BadValue, "x {}", y)`.
#[macro_export]
macro_rules! err {
    ($code:ident, $($arg:tt)*) => {
        $crate::Error::new($crate::Code::$code, format!($($arg)*))
    };
}

/// Returns early with an [`Error`]: `bail!(BadValue, "x {}", y)`.
#[macro_export]
macro_rules! bail {
    ($code:ident, $($arg:tt)*) => {
        return Err($crate::err!($code, $($arg)*))
    };
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(Code::InternalError, format!("I/O error: {e}"))
    }
}

/// Decodes a document Folio stored (a collection's document, catalog entry, session record,
/// change-log entry). A failure is not the client's: it is DataCorruptionDetected, naming
/// `what` was being read.
pub fn stored_document(mut bytes: &[u8], what: &str) -> Result<bson::Document> {
    stored_document_from(&mut bytes, what)
}

/// A stored document kept as its bytes: its length is checked against what is held (and
/// anything after it dropped), its elements are not. A reader reads those it needs and falls
/// back to [`stored_document`], which reports corruption, where one is unreadable; the rest go
/// out as they were written (the storage engine's page checksums guard them on disk).
pub fn stored_raw_document(mut bytes: Vec<u8>, what: &str) -> Result<bson::RawDocumentBuf> {
    let len = stored_len(&bytes, what)?;
    bytes.truncate(len);
    bson::RawDocumentBuf::from_bytes(bytes).map_err(|e| corrupt_stored(what, &e))
}

/// DataCorruptionDetected for a stored `what` that does not read.
fn corrupt_stored(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::new(Code::DataCorruptionDetected, format!("corrupt stored {what}: {e}"))
}

/// The length of the stored document at the front of `bytes`, from its prefix, checked
/// against what is held.
fn stored_len(bytes: &[u8], what: &str) -> Result<usize> {
    let len = match bytes.first_chunk::<4>() {
        Some(prefix) => i32::from_le_bytes(*prefix),
        None => return Err(corrupt_stored(what, &"truncated length")),
    };
    match usize::try_from(len) {
        Ok(l) if l <= bytes.len() => Ok(l),
        _ => Err(corrupt_stored(
            what,
            &format_args!("length {len} past the {} bytes held", bytes.len()),
        )),
    }
}

/// Like [`stored_document`], reading one document from the front of `bytes` and advancing it
/// (records that hold several documents back to back).
pub fn stored_document_from(bytes: &mut &[u8], what: &str) -> Result<bson::Document> {
    let doc_bytes = &bytes[..stored_len(bytes, what)?];
    // The wire's parser: validated, depth-bounded and converted in one walk.
    let doc = folio_wire::parse_document(doc_bytes).map_err(|e| corrupt_stored(what, &e))?;
    *bytes = &bytes[doc_bytes.len()..];
    Ok(doc)
}

impl From<bson::error::Error> for Error {
    fn from(e: bson::error::Error) -> Self {
        Error::new(Code::InvalidBSON, format!("invalid BSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_come_from_the_table() {
        // MongoDB's RetriableError category, by number.
        let retryable = [6, 7, 89, 91, 134, 189, 202, 262, 9001, 10107, 11600, 11602, 13435, 13436];
        for n in 0..20_000 {
            let code = Code::from_number(n);
            assert_eq!(code.is_retryable(), retryable.contains(&n), "{n}");
        }
        for code in [
            Code::WriteConflict,
            Code::LockTimeout,
            Code::SnapshotTooOld,
            Code::SnapshotUnavailable,
            Code::PreparedTransactionInProgress,
        ] {
            assert!(code.is_transient_in_txn(), "{code:?}");
        }
        assert!(!Code::NoSuchTransaction.is_transient_in_txn(), "decided by context in labels.rs");
        assert!(Code::MaxTimeMSExpired.is(Category::EndsCommand));
        assert!(!Code::DuplicateKey.is(Category::EndsCommand));
        assert!(Code::Other(4242).categories().is_empty());
    }

    #[test]
    fn stored_data_that_does_not_decode_is_corruption_not_bad_input() {
        let good = bson::doc! {"a": 1, "b": "x"};
        let bytes = good.to_vec().expect("encode");
        assert_eq!(stored_document(&bytes, "document").expect("decodes"), good);
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let mut rest = &two[..];
        assert_eq!(stored_document_from(&mut rest, "entry").expect("first"), good);
        assert_eq!(stored_document_from(&mut rest, "entry").expect("second"), good);
        assert!(rest.is_empty());
        let e = stored_document(&bytes[..bytes.len() - 2], "document").expect_err("truncated");
        assert_eq!(e.code, Code::DataCorruptionDetected);
        assert_eq!(e.code_name(), "DataCorruptionDetected");
        assert_eq!(e.code_number(), 296);
        assert!(e.message.starts_with("corrupt stored document: "), "{}", e.message);
        // Input that does not decode stays InvalidBSON.
        let input: Error = bson::Document::from_reader(&bytes[..3]).expect_err("short").into();
        assert_eq!(input.code, Code::InvalidBSON);
    }

    #[test]
    fn codes_round_trip() {
        for n in [2, 11000, 112, 251, 263, 12345] {
            assert_eq!(Code::from_number(n).number(), n);
        }
        assert_eq!(Code::from_number(112).name(), "WriteConflict");
        assert_eq!(Code::from_number(12345).name(), "Location12345");
    }

    #[test]
    fn labels_are_added_once() {
        let e = err!(WriteConflict, "conflict").with_label(labels::TRANSIENT_TRANSACTION_ERROR);
        let e = e.with_label(labels::TRANSIENT_TRANSACTION_ERROR);
        assert_eq!(e.labels.len(), 1);
        assert!(e.is_write_conflict());
    }
}
