//! Decoding and encoding errors.
//!
//! The split that matters to a server is whether the byte stream can still be trusted.
//! [`WireError::Framing`] means it cannot (a length, opcode or checksum is wrong, so the next
//! frame boundary is unknown or the data was damaged): the connection must be closed.
//! [`WireError::Malformed`] means one well-delimited frame had bad content (invalid BSON, an
//! unknown section kind): the server answers that request with an error and reads on.

use std::fmt;

use crate::Compressor;

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The framing is broken; close the connection.
    Framing(String),
    /// The frame was well delimited but its content is invalid; reply with an error.
    Malformed(Malformed),
}

impl WireError {
    /// Whether the connection must be closed.
    pub fn is_fatal(&self) -> bool {
        match self {
            WireError::Framing(_) => true,
            WireError::Malformed(_) => false,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Framing(m) => write!(f, "broken message framing: {m}"),
            WireError::Malformed(m) => write!(f, "malformed message: {}", m.message),
        }
    }
}

impl std::error::Error for WireError {}

/// What kind of content error a [`Malformed`] frame has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedKind {
    /// A BSON document in the message is invalid (MongoDB code 22, InvalidBSON).
    InvalidBson,
    /// The message structure is invalid: unknown section kind, missing body, illegal flags,
    /// undecompressable data (MongoDB code 17, ProtocolError).
    Protocol,
    /// The OP_MSG body names one top-level field twice (MongoDB code 9, FailedToParse: "Parsed
    /// command object contains duplicate top level key"). Decoding into a map would silently
    /// keep one of the two values, so only the raw bytes can tell.
    DuplicateField,
}

/// A well-delimited frame whose content could not be decoded, with what a server needs to
/// answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The frame's total length: skip this many bytes to reach the next frame.
    pub frame_len: usize,
    /// The request's id, to put in the reply's `responseTo`.
    pub request_id: i32,
    /// The opcode of the (decompressed) message: decides between an OP_MSG and an OP_REPLY
    /// answer.
    pub op_code: i32,
    /// The compressor the request used, if it was compressed.
    pub compressor: Option<Compressor>,
    /// Whether the request said it wants no reply (OP_MSG `moreToCome`).
    pub more_to_come: bool,
    /// The kind of error.
    pub kind: MalformedKind,
    /// A description for the error reply.
    pub message: String,
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A document could not be serialized.
    Bson(String),
    /// The message would exceed the maximum message size.
    TooLarge(usize),
    /// Compression failed.
    Compression(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Bson(m) => write!(f, "cannot serialize document: {m}"),
            EncodeError::TooLarge(n) => {
                write!(f, "message of {n} bytes exceeds the maximum of {}", crate::MAX_MESSAGE_SIZE)
            }
            EncodeError::Compression(m) => write!(f, "cannot compress message: {m}"),
        }
    }
}

impl std::error::Error for EncodeError {}
