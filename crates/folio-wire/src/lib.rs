//! A sans-IO codec for the MongoDB wire protocol.
//!
//! This crate turns bytes into [`Message`]s and back, and does nothing else: no sockets, no
//! async runtime, no knowledge of commands. A server feeds whatever it has read into [`decode`],
//! which returns `Ok(None)` until a whole frame is buffered, and hands replies to [`encode`].
//! Keeping I/O out makes every path testable with byte slices and lets the decoder be fuzzed.
//!
//! # The messages
//!
//! Every frame starts with a 16-byte header: `messageLength`, `requestID`, `responseTo`,
//! `opCode` (little-endian `i32`s, the length counting the header itself). Four opcodes exist
//! here:
//!
//! - **OP_MSG** (2013), the only opcode modern drivers use: `flagBits`, then sections. A kind-0
//!   section is the command body (exactly one); kind-1 sections are *document sequences*
//!   (`identifier` plus documents, how drivers send large `documents`/`updates`/`deletes`
//!   arrays without nesting them in the body). Flag bit 0 (`checksumPresent`) appends a CRC-32C
//!   of the whole message; bit 1 (`moreToCome`) says the sender expects no reply; bit 16
//!   (`exhaustAllowed`) lets the server stream replies. Bits 0–15 are "required": a receiver must
//!   reject a message with an unknown one set.
//! - **OP_QUERY** (2004), legacy: drivers still send their first `isMaster` with it, to
//!   `admin.$cmd`, before they know the server speaks OP_MSG.
//! - **OP_REPLY** (1), the legacy answer to OP_QUERY.
//! - **OP_COMPRESSED** (2012) wraps any of the above: original opcode, uncompressed size,
//!   compressor id, compressed bytes. It is unwrapped here, and the returned [`Message`] records
//!   the [`Compressor`] so a reply can be compressed the same way.
//!
//! # Errors and hostile input
//!
//! Nothing here trusts a length. The frame length is checked against [`MAX_MESSAGE_SIZE`] before
//! anything is buffered for it, every inner length is checked against the bytes that remain, and
//! decompression is bounded by the declared size. BSON nesting is checked iteratively before a
//! document is materialized, so a deeply nested document cannot overflow the stack.
//!
//! Errors say what the caller must do (see [`WireError`]): broken framing closes the connection,
//! a bad document inside a sound frame gets an error reply.

mod compress;
mod error;
mod owned;
mod times;

use bson::raw::{RawDocument, RawDocumentBuf};
use bson::{Bson, Document};

pub use compress::Compressor;
pub use error::{EncodeError, Malformed, MalformedKind, WireError};
pub use owned::{Shape, inspect, to_bson, to_document};
pub use times::{append_times, is_own_cluster_time};

/// The size of a message header.
pub const HEADER_LEN: usize = 16;

/// The largest message accepted or produced (MongoDB's `maxMessageSizeBytes`).
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;

/// The deepest BSON nesting accepted in a message (MongoDB validates incoming BSON to this depth).
pub const MAX_BSON_DEPTH: usize = 200;

/// Opcodes.
pub mod op_code {
    /// OP_REPLY, the legacy reply.
    pub const REPLY: i32 = 1;
    /// OP_QUERY, the legacy query (still used for the first `isMaster`).
    pub const QUERY: i32 = 2004;
    /// OP_COMPRESSED.
    pub const COMPRESSED: i32 = 2012;
    /// OP_MSG.
    pub const MSG: i32 = 2013;
}

/// OP_MSG flag bits.
pub mod msg_flags {
    /// A CRC-32C checksum follows the sections.
    pub const CHECKSUM_PRESENT: u32 = 1 << 0;
    /// The sender will not wait for a reply (and, on replies, another one follows).
    pub const MORE_TO_COME: u32 = 1 << 1;
    /// The client accepts exhaust replies.
    pub const EXHAUST_ALLOWED: u32 = 1 << 16;
    /// Bits a receiver must understand (0–15); any of these it does not know is an error.
    pub const REQUIRED_MASK: u32 = 0xFFFF;
    /// The required bits this codec understands.
    pub const KNOWN_REQUIRED: u32 = CHECKSUM_PRESENT | MORE_TO_COME;
}

/// OP_REPLY `responseFlags` bits.
pub mod reply_flags {
    /// The query failed (legacy; command errors are reported in the document instead).
    pub const QUERY_FAILURE: i32 = 1 << 1;
    /// The server supports `awaitData` (MongoDB always sets it).
    pub const AWAIT_CAPABLE: i32 = 1 << 3;
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The sender's id for this message.
    pub request_id: i32,
    /// The id of the request this answers (0 for requests).
    pub response_to: i32,
    /// The compressor the message was (or is to be) wrapped with, if any.
    pub compressor: Option<Compressor>,
    /// The operation.
    pub op: Op,
}

impl Message {
    /// An uncompressed OP_MSG with a body only.
    pub fn msg(request_id: i32, response_to: i32, flags: u32, body: Document) -> Message {
        Message {
            request_id,
            response_to,
            compressor: None,
            op: Op::Msg(OpMsg { flags, body, sequences: Vec::new() }),
        }
    }

    /// An uncompressed OP_REPLY carrying one document, as a command reply.
    pub fn reply(request_id: i32, response_to: i32, document: Document) -> Message {
        Message {
            request_id,
            response_to,
            compressor: None,
            op: Op::Reply(OpReply {
                response_flags: reply_flags::AWAIT_CAPABLE,
                cursor_id: 0,
                starting_from: 0,
                documents: vec![document],
            }),
        }
    }
}

/// The operation a message carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// OP_MSG.
    Msg(OpMsg),
    /// OP_QUERY.
    Query(OpQuery),
    /// OP_REPLY.
    Reply(OpReply),
}

impl Op {
    /// The opcode of this operation.
    pub fn op_code(&self) -> i32 {
        match self {
            Op::Msg(_) => op_code::MSG,
            Op::Query(_) => op_code::QUERY,
            Op::Reply(_) => op_code::REPLY,
        }
    }
}

/// An OP_MSG.
#[derive(Clone, Debug, PartialEq)]
pub struct OpMsg {
    /// The flag bits (see [`msg_flags`]).
    pub flags: u32,
    /// The kind-0 section.
    pub body: Document,
    /// The kind-1 sections, in order.
    pub sequences: Vec<DocumentSequence>,
}

impl OpMsg {
    /// Whether `moreToCome` is set.
    pub fn more_to_come(&self) -> bool {
        self.flags & msg_flags::MORE_TO_COME != 0
    }

    /// Whether `checksumPresent` is set.
    pub fn checksum_present(&self) -> bool {
        self.flags & msg_flags::CHECKSUM_PRESENT != 0
    }

    /// Whether `exhaustAllowed` is set.
    pub fn exhaust_allowed(&self) -> bool {
        self.flags & msg_flags::EXHAUST_ALLOWED != 0
    }

    /// The command document: the body with each document sequence added as an array field named
    /// by its identifier, which is how MongoDB interprets sequences. A sequence whose identifier
    /// is also a body field (or another sequence's) is an error.
    pub fn into_command(self) -> Result<Document, String> {
        self.into_command_keeping(|_, _| false).map(|(cmd, _)| cmd)
    }

    /// [`OpMsg::into_command`], except that the first sequence `keep` picks (given the body and
    /// the sequence's identifier) is not merged but handed back as it came, its documents still
    /// raw: a command that stores its documents as they arrived (an `insert`) then never builds
    /// them as [`Document`]s. The checks for repeated names cover it too.
    pub fn into_command_keeping(
        self,
        keep: impl Fn(&Document, &str) -> bool,
    ) -> Result<(Document, Option<DocumentSequence>), String> {
        let mut body = self.body;
        let mut kept: Option<DocumentSequence> = None;
        for seq in self.sequences {
            if body.contains_key(&seq.identifier)
                || kept.as_ref().is_some_and(|k| k.identifier == seq.identifier)
            {
                return Err(format!(
                    "Duplicate field name in OP_MSG document sequence and body: {}",
                    seq.identifier
                ));
            }
            if kept.is_none() && keep(&body, &seq.identifier) {
                kept = Some(seq);
                continue;
            }
            let docs = seq
                .documents
                .iter()
                .map(|d| d.to_document().map(Bson::Document))
                .collect::<Result<Vec<_>, _>>()?;
            body.insert(seq.identifier, Bson::Array(docs));
        }
        Ok((body, kept))
    }
}

/// An OP_MSG kind-1 section.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentSequence {
    /// The field name the documents stand for (`documents`, `updates`, ...).
    pub identifier: String,
    /// The documents.
    pub documents: Vec<SequenceDocument>,
}

/// One document of a [`DocumentSequence`]: its BSON as it came, validated when it was decoded
/// (as a converted document is, to the same depth), and what that walk found.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceDocument {
    /// The document's bytes.
    pub raw: RawDocumentBuf,
    /// Its depth, and whether its owned form would encode back to the same bytes.
    pub shape: Shape,
}

impl SequenceDocument {
    /// A sequence document from BSON bytes, validated.
    pub fn from_raw(raw: RawDocumentBuf) -> Result<SequenceDocument, String> {
        let shape = inspect(&raw)?;
        Ok(SequenceDocument { raw, shape })
    }

    /// A sequence document holding `doc`.
    pub fn from_document(doc: &Document) -> Result<SequenceDocument, String> {
        Self::from_raw(RawDocumentBuf::try_from(doc).map_err(|e| e.to_string())?)
    }

    /// The owned form of the document.
    pub fn to_document(&self) -> Result<Document, String> {
        to_document(&self.raw)
    }
}

/// A legacy OP_QUERY.
#[derive(Clone, Debug, PartialEq)]
pub struct OpQuery {
    /// The flag bits.
    pub flags: i32,
    /// `db.collection`; `db.$cmd` for commands.
    pub full_collection_name: String,
    /// Documents to skip.
    pub number_to_skip: i32,
    /// Documents to return.
    pub number_to_return: i32,
    /// The query (for `$cmd`, the command).
    pub query: Document,
    /// The optional projection.
    pub return_fields_selector: Option<Document>,
}

/// A legacy OP_REPLY.
#[derive(Clone, Debug, PartialEq)]
pub struct OpReply {
    /// The flag bits (see [`reply_flags`]).
    pub response_flags: i32,
    /// The cursor id (0 for command replies).
    pub cursor_id: i64,
    /// The position of the first document in the cursor.
    pub starting_from: i32,
    /// The documents.
    pub documents: Vec<Document>,
}

/// Checks the length prefix of the buffered bytes: `Ok(None)` until 4 bytes are there, then the
/// frame length, or a framing error when it is out of range.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_le_bytes(*prefix);
    if len < HEADER_LEN as i32 {
        return Err(WireError::Framing(format!("message length {len} is shorter than a header")));
    }
    if len as usize > MAX_MESSAGE_SIZE {
        return Err(WireError::Framing(format!(
            "message length {len} exceeds the maximum message size {MAX_MESSAGE_SIZE}"
        )));
    }
    Ok(Some(len as usize))
}

/// Decodes the first message in `buf`. Returns `Ok(None)` while the frame is incomplete, else
/// the message and the number of bytes it used. On [`WireError::Malformed`] the frame's length is
/// in the error so that the caller can skip it.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    decode_as(buf, false)
}

/// [`decode`] for a server reading requests: an OP_MSG body's top-level `$clusterTime` (the
/// cluster time a driver gossips back with every command, which a single server has no use for)
/// is validated but left out of the decoded body, which saves building its three documents for
/// every command.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    decode_as(buf, true)
}

fn decode_as(buf: &[u8], request: bool) -> Result<Option<(Message, usize)>, WireError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    decode_frame(frame, request).map(|m| Some((m, len)))
}

/// The header fields after the length.
#[derive(Clone, Copy)]
struct Header {
    request_id: i32,
    response_to: i32,
    op_code: i32,
}

impl Header {
    /// Reads the header of a frame of at least [`HEADER_LEN`] bytes.
    fn parse(frame: &[u8]) -> Header {
        let mut r = Reader::new(frame);
        let _len = r.i32();
        Header {
            request_id: r.i32().unwrap_or(0),
            response_to: r.i32().unwrap_or(0),
            op_code: r.i32().unwrap_or(0),
        }
    }
}

/// What a [`Malformed`] error needs to know about the frame being decoded.
struct Ctx {
    frame_len: usize,
    request_id: i32,
    op_code: i32,
    compressor: Option<Compressor>,
    more_to_come: bool,
    /// Decoding a request: see [`decode_request`].
    request: bool,
}

impl Ctx {
    fn malformed(&self, kind: MalformedKind, message: impl Into<String>) -> WireError {
        WireError::Malformed(Malformed {
            frame_len: self.frame_len,
            request_id: self.request_id,
            op_code: self.op_code,
            compressor: self.compressor,
            more_to_come: self.more_to_come,
            kind,
            message: message.into(),
        })
    }

    fn protocol(&self, message: impl Into<String>) -> WireError {
        self.malformed(MalformedKind::Protocol, message)
    }

    fn bson(&self, message: impl Into<String>) -> WireError {
        self.malformed(MalformedKind::InvalidBson, message)
    }
}

/// Decodes one whole frame.
fn decode_frame(frame: &[u8], request: bool) -> Result<Message, WireError> {
    let header = Header::parse(frame);
    match header.op_code {
        op_code::COMPRESSED => decode_compressed(frame, header, request),
        op_code::MSG | op_code::QUERY | op_code::REPLY => {
            decode_plain(frame, header, None, frame.len(), request)
        }
        other => Err(WireError::Framing(format!("unknown opcode {other}"))),
    }
}

/// Unwraps an OP_COMPRESSED frame and decodes the message inside.
fn decode_compressed(frame: &[u8], header: Header, request: bool) -> Result<Message, WireError> {
    let mut r = Reader::new(frame.get(HEADER_LEN..).unwrap_or_default());
    let (Some(original), Some(size), Some(id)) = (r.i32(), r.i32(), r.u8()) else {
        return Err(WireError::Framing("OP_COMPRESSED message too short".into()));
    };
    if !matches!(original, op_code::MSG | op_code::QUERY | op_code::REPLY) {
        return Err(WireError::Framing(format!(
            "OP_COMPRESSED wraps unsupported opcode {original}"
        )));
    }
    if size < 0 || size as usize > MAX_MESSAGE_SIZE - HEADER_LEN {
        return Err(WireError::Framing(format!(
            "OP_COMPRESSED uncompressed size {size} out of range"
        )));
    }
    let Some(compressor) = Compressor::from_id(id) else {
        return Err(WireError::Framing(format!("unknown compressor id {id}")));
    };
    let ctx = Ctx {
        frame_len: frame.len(),
        request_id: header.request_id,
        op_code: original,
        compressor: Some(compressor),
        more_to_come: false,
        request,
    };
    let inner = compressor
        .decompress(r.rest(), size as usize)
        .map_err(|e| ctx.protocol(format!("cannot decompress message: {e}")))?;
    let mut full = Vec::with_capacity(HEADER_LEN + inner.len());
    full.extend_from_slice(&((HEADER_LEN + inner.len()) as i32).to_le_bytes());
    full.extend_from_slice(&header.request_id.to_le_bytes());
    full.extend_from_slice(&header.response_to.to_le_bytes());
    full.extend_from_slice(&original.to_le_bytes());
    full.extend_from_slice(&inner);
    let header = Header { op_code: original, ..header };
    decode_plain(&full, header, Some(compressor), frame.len(), request)
}

/// Decodes an uncompressed OP_MSG, OP_QUERY or OP_REPLY frame. `frame_len` is the length of the
/// frame on the wire (which differs from `frame.len()` for a decompressed message).
fn decode_plain(
    frame: &[u8],
    header: Header,
    compressor: Option<Compressor>,
    frame_len: usize,
    request: bool,
) -> Result<Message, WireError> {
    let mut ctx = Ctx {
        frame_len,
        request_id: header.request_id,
        op_code: header.op_code,
        compressor,
        more_to_come: false,
        request,
    };
    let op = match header.op_code {
        op_code::MSG => Op::Msg(decode_msg(frame, &mut ctx)?),
        op_code::QUERY => {
            Op::Query(decode_query(frame.get(HEADER_LEN..).unwrap_or_default(), &ctx)?)
        }
        op_code::REPLY => {
            Op::Reply(decode_reply(frame.get(HEADER_LEN..).unwrap_or_default(), &ctx)?)
        }
        other => return Err(WireError::Framing(format!("unknown opcode {other}"))),
    };
    Ok(Message { request_id: header.request_id, response_to: header.response_to, compressor, op })
}

/// Decodes an OP_MSG, verifying its checksum first.
fn decode_msg(frame: &[u8], ctx: &mut Ctx) -> Result<OpMsg, WireError> {
    let mut r = Reader::new(frame.get(HEADER_LEN..).unwrap_or_default());
    let Some(flags) = r.u32() else {
        return Err(ctx.protocol("OP_MSG too short for its flags"));
    };
    ctx.more_to_come = flags & msg_flags::MORE_TO_COME != 0;
    let mut sections = r.rest();
    if flags & msg_flags::CHECKSUM_PRESENT != 0 {
        let Some((covered, stored)) = frame.split_last_chunk::<4>() else {
            return Err(WireError::Framing("OP_MSG too short for its checksum".into()));
        };
        if covered.len() < HEADER_LEN + 4 {
            return Err(WireError::Framing("OP_MSG too short for its checksum".into()));
        }
        let expected = u32::from_le_bytes(*stored);
        let actual = crc32c::crc32c(covered);
        if expected != actual {
            return Err(WireError::Framing(format!(
                "OP_MSG checksum mismatch: message says {expected:#010x}, content gives {actual:#010x}"
            )));
        }
        sections = sections.get(..sections.len().saturating_sub(4)).unwrap_or_default();
    }
    let unknown = flags & msg_flags::REQUIRED_MASK & !msg_flags::KNOWN_REQUIRED;
    if unknown != 0 {
        return Err(
            ctx.protocol(format!("OP_MSG contains unknown required flag bits {unknown:#x}"))
        );
    }
    let mut r = Reader::new(sections);
    let mut body = None;
    let mut sequences = Vec::new();
    while r.remaining() > 0 {
        match r.u8() {
            Some(0) => {
                let bytes = r.document_bytes().map_err(|e| ctx.bson(e))?;
                let raw = RawDocument::from_bytes(bytes).map_err(|e| ctx.bson(e.to_string()))?;
                let skip = if ctx.request { Some(CLUSTER_TIME) } else { None };
                let (doc, repeated) =
                    owned::to_document_checking_duplicates(raw, skip).map_err(|e| ctx.bson(e))?;
                if body.replace((doc, bytes, repeated)).is_some() {
                    return Err(ctx.protocol("OP_MSG has more than one body section"));
                }
            }
            Some(1) => sequences.push(decode_sequence(&mut r, ctx)?),
            Some(kind) => {
                return Err(ctx.protocol(format!("OP_MSG has unknown section kind {kind}")));
            }
            None => break,
        }
    }
    let Some((body, bytes, repeated)) = body else {
        return Err(ctx.protocol("OP_MSG has no body section"));
    };
    if let Some(field) = repeated.then(|| duplicate_top_level_key(bytes)).flatten() {
        return Err(ctx.malformed(
            MalformedKind::DuplicateField,
            format!("Parsed command object contains duplicate top level key: {field}"),
        ));
    }
    Ok(OpMsg { flags, body, sequences })
}

/// The field of a request's body that [`decode_request`] leaves out.
const CLUSTER_TIME: &str = "$clusterTime";

/// Decodes a kind-1 section after its kind byte.
fn decode_sequence(r: &mut Reader<'_>, ctx: &Ctx) -> Result<DocumentSequence, WireError> {
    let Some(size) = r.i32() else {
        return Err(ctx.protocol("OP_MSG document sequence too short for its size"));
    };
    let content_len = usize::try_from(size).ok().and_then(|s| s.checked_sub(4));
    let Some(content) = content_len.and_then(|n| r.take(n)) else {
        return Err(ctx.protocol(format!("OP_MSG document sequence size {size} is out of range")));
    };
    let mut r = Reader::new(content);
    let Some(identifier) = r.cstr() else {
        return Err(ctx.protocol("OP_MSG document sequence identifier is not a valid C string"));
    };
    let mut documents = Vec::new();
    while r.remaining() > 0 {
        // Validated here, converted only if the command wants the documents as `Document`s.
        let bytes = r.document_bytes().map_err(|e| ctx.bson(e))?;
        let raw = RawDocument::from_bytes(bytes).map_err(|e| ctx.bson(e.to_string()))?;
        let shape = inspect(raw).map_err(|e| ctx.bson(e))?;
        documents.push(SequenceDocument { raw: raw.to_owned(), shape });
    }
    Ok(DocumentSequence { identifier: identifier.to_string(), documents })
}

/// Decodes an OP_QUERY body.
fn decode_query(body: &[u8], ctx: &Ctx) -> Result<OpQuery, WireError> {
    let mut r = Reader::new(body);
    let Some(flags) = r.i32() else {
        return Err(ctx.protocol("OP_QUERY too short"));
    };
    let Some(name) = r.cstr() else {
        return Err(ctx.protocol("OP_QUERY collection name is not a valid C string"));
    };
    let (Some(number_to_skip), Some(number_to_return)) = (r.i32(), r.i32()) else {
        return Err(ctx.protocol("OP_QUERY too short"));
    };
    let query = r.document().map_err(|e| ctx.bson(e))?;
    let return_fields_selector =
        if r.remaining() > 0 { Some(r.document().map_err(|e| ctx.bson(e))?) } else { None };
    if r.remaining() > 0 {
        return Err(ctx.protocol("OP_QUERY has trailing bytes"));
    }
    Ok(OpQuery {
        flags,
        full_collection_name: name.to_string(),
        number_to_skip,
        number_to_return,
        query,
        return_fields_selector,
    })
}

/// Decodes an OP_REPLY body.
fn decode_reply(body: &[u8], ctx: &Ctx) -> Result<OpReply, WireError> {
    let mut r = Reader::new(body);
    let (Some(response_flags), Some(cursor_id), Some(starting_from), Some(n)) =
        (r.i32(), r.i64(), r.i32(), r.i32())
    else {
        return Err(ctx.protocol("OP_REPLY too short"));
    };
    let mut documents = Vec::new();
    while r.remaining() > 0 {
        documents.push(r.document().map_err(|e| ctx.bson(e))?);
    }
    if usize::try_from(n).ok() != Some(documents.len()) {
        return Err(ctx.protocol(format!(
            "OP_REPLY says it returns {n} documents but holds {}",
            documents.len()
        )));
    }
    Ok(OpReply { response_flags, cursor_id, starting_from, documents })
}

/// A cursor over a byte slice whose reads fail (return `None`) instead of running off the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.buf.split_first_chunk::<N>()?;
        self.buf = tail;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self) -> Option<&'a str> {
        let nul = self.buf.iter().position(|&b| b == 0)?;
        let s = std::str::from_utf8(self.take(nul)?).ok()?;
        self.take(1)?;
        Some(s)
    }

    /// A BSON document, validated completely.
    fn document(&mut self) -> Result<Document, String> {
        self.document_with_bytes().map(|(doc, _)| doc)
    }

    /// A BSON document, validated completely, with the bytes it was read from.
    fn document_with_bytes(&mut self) -> Result<(Document, &'a [u8]), String> {
        let bytes = self.document_bytes()?;
        parse_document(bytes).map(|doc| (doc, bytes))
    }

    /// The bytes of the BSON document at the front, by its length prefix (not validated).
    fn document_bytes(&mut self) -> Result<&'a [u8], String> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Err("truncated BSON document: no length".into());
        };
        let len = i32::from_le_bytes(*prefix);
        let Some(bytes) = usize::try_from(len).ok().filter(|&l| l >= 5).and_then(|l| self.take(l))
        else {
            return Err(format!(
                "BSON document length {len} is invalid for the {} bytes that remain",
                self.buf.len()
            ));
        };
        Ok(bytes)
    }
}

/// The first top-level field name that occurs twice in a (validated) raw document. A command
/// is small, so the quadratic scan over its handful of fields costs less than hashing them.
fn duplicate_top_level_key(bytes: &[u8]) -> Option<String> {
    let raw = RawDocument::from_bytes(bytes).ok()?;
    let keys: Vec<&str> = raw.iter().filter_map(|e| e.ok().map(|(k, _)| k.as_str())).collect();
    keys.iter().enumerate().find(|&(i, k)| keys[..i].contains(k)).map(|(_, k)| k.to_string())
}

/// Parses and fully validates one BSON document occupying exactly `bytes`, refusing nesting
/// deeper than [`MAX_BSON_DEPTH`].
pub fn parse_document(bytes: &[u8]) -> Result<Document, String> {
    let raw = RawDocument::from_bytes(bytes).map_err(|e| e.to_string())?;
    to_document(raw)
}

/// Encodes a message, compressing it when [`Message::compressor`] is set and appending a
/// checksum when an OP_MSG has `checksumPresent`.
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    write_header(&mut out, msg.request_id, msg.response_to, msg.op.op_code());
    match &msg.op {
        Op::Msg(m) => encode_msg(m, &mut out)?,
        Op::Query(q) => encode_query(q, &mut out)?,
        Op::Reply(r) => encode_reply(r, &mut out)?,
    }
    let checksum = matches!(&msg.op, Op::Msg(m) if m.checksum_present());
    finish(out, msg.request_id, msg.response_to, msg.op.op_code(), checksum, msg.compressor)
}

/// Encodes an OP_MSG whose body (its one kind-0 section) is already encoded BSON, as
/// [`encode`] encodes [`Message::msg`] with that body: a reply built from stored documents
/// is written without decoding and encoding them again. The body is not checked.
pub fn encode_msg_body(
    request_id: i32,
    response_to: i32,
    flags: u32,
    compressor: Option<Compressor>,
    body: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 5 + body.len() + 4);
    write_header(&mut out, request_id, response_to, op_code::MSG);
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(0);
    out.extend_from_slice(body);
    let checksum = flags & msg_flags::CHECKSUM_PRESENT != 0;
    finish(out, request_id, response_to, op_code::MSG, checksum, compressor)
}

/// Completes an encoded message: its checksum if it has one, its length, its compression.
fn finish(
    mut out: Vec<u8>,
    request_id: i32,
    response_to: i32,
    op_code: i32,
    checksum: bool,
    compressor: Option<Compressor>,
) -> Result<Vec<u8>, EncodeError> {
    if checksum {
        let len = out.len() + 4;
        set_len(&mut out, len)?;
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let len = out.len();
    set_len(&mut out, len)?;
    if let Some(compressor) = compressor {
        out = wrap_compressed(&out, request_id, response_to, op_code, compressor)?;
    }
    Ok(out)
}

fn write_header(out: &mut Vec<u8>, request_id: i32, response_to: i32, op_code: i32) {
    out.extend_from_slice(&0_i32.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&op_code.to_le_bytes());
}

/// Stores the message length in the header, refusing oversized messages.
fn set_len(out: &mut [u8], len: usize) -> Result<(), EncodeError> {
    if len > MAX_MESSAGE_SIZE {
        return Err(EncodeError::TooLarge(len));
    }
    if let Some(prefix) = out.first_chunk_mut::<4>() {
        *prefix = (len as i32).to_le_bytes();
    }
    Ok(())
}

fn write_doc(doc: &Document, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    doc.to_writer(out).map_err(|e| EncodeError::Bson(e.to_string()))
}

fn write_cstr(s: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::Bson(format!("string {s:?} contains a NUL byte")));
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

fn encode_msg(m: &OpMsg, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&m.flags.to_le_bytes());
    out.push(0);
    write_doc(&m.body, out)?;
    for seq in &m.sequences {
        out.push(1);
        let start = out.len();
        out.extend_from_slice(&0_i32.to_le_bytes());
        write_cstr(&seq.identifier, out)?;
        for doc in &seq.documents {
            out.extend_from_slice(doc.raw.as_bytes());
        }
        let size = out.len() - start;
        if size > MAX_MESSAGE_SIZE {
            return Err(EncodeError::TooLarge(size));
        }
        out[start..start + 4].copy_from_slice(&(size as i32).to_le_bytes());
    }
    Ok(())
}

fn encode_query(q: &OpQuery, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&q.flags.to_le_bytes());
    write_cstr(&q.full_collection_name, out)?;
    out.extend_from_slice(&q.number_to_skip.to_le_bytes());
    out.extend_from_slice(&q.number_to_return.to_le_bytes());
    write_doc(&q.query, out)?;
    if let Some(fields) = &q.return_fields_selector {
        write_doc(fields, out)?;
    }
    Ok(())
}

fn encode_reply(r: &OpReply, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&r.response_flags.to_le_bytes());
    out.extend_from_slice(&r.cursor_id.to_le_bytes());
    out.extend_from_slice(&r.starting_from.to_le_bytes());
    let n =
        i32::try_from(r.documents.len()).map_err(|_| EncodeError::TooLarge(r.documents.len()))?;
    out.extend_from_slice(&n.to_le_bytes());
    for doc in &r.documents {
        write_doc(doc, out)?;
    }
    Ok(())
}

/// Wraps an encoded message in OP_COMPRESSED.
fn wrap_compressed(
    plain: &[u8],
    request_id: i32,
    response_to: i32,
    original_op_code: i32,
    compressor: Compressor,
) -> Result<Vec<u8>, EncodeError> {
    let inner = plain.get(HEADER_LEN..).unwrap_or_default();
    let compressed = compressor.compress(inner).map_err(EncodeError::Compression)?;
    let mut out = Vec::with_capacity(HEADER_LEN + 9 + compressed.len());
    write_header(&mut out, request_id, response_to, op_code::COMPRESSED);
    out.extend_from_slice(&original_op_code.to_le_bytes());
    out.extend_from_slice(&(inner.len() as i32).to_le_bytes());
    out.push(compressor.id());
    out.extend_from_slice(&compressed);
    let len = out.len();
    set_len(&mut out, len)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
