//! Codec tests: round trips for every opcode and compressor, and every error path.

use bson::{Document, doc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn hello() -> Document {
    doc! { "hello": 1, "$db": "admin", "helloOk": true }
}

fn round_trip(msg: &Message) -> Message {
    let bytes = encode(msg).expect("encode");
    let (decoded, used) = decode(&bytes).expect("decode").expect("complete frame");
    assert_eq!(used, bytes.len());
    decoded
}

fn malformed(bytes: &[u8]) -> Malformed {
    match decode(bytes) {
        Err(WireError::Malformed(m)) => m,
        other => panic!("expected a malformed-message error, got {other:?}"),
    }
}

fn framing(bytes: &[u8]) -> String {
    match decode(bytes) {
        Err(WireError::Framing(m)) => m,
        other => panic!("expected a framing error, got {other:?}"),
    }
}

/// Builds a frame by hand: header plus `body`, with a correct length.
fn frame(request_id: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((HEADER_LEN + body.len()) as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0_i32.to_le_bytes());
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Sequence documents holding `docs`.
fn seq_docs(docs: &[Document]) -> Vec<SequenceDocument> {
    docs.iter().map(|d| SequenceDocument::from_document(d).expect("encodable")).collect()
}

fn doc_bytes(d: &Document) -> Vec<u8> {
    d.to_vec().expect("serialize")
}

#[test]
fn op_msg_round_trip_with_sequences() {
    let mut msg = Message::msg(7, 0, 0, doc! { "insert": "c", "$db": "test" });
    if let Op::Msg(m) = &mut msg.op {
        m.sequences.push(DocumentSequence {
            identifier: "documents".into(),
            documents: seq_docs(&[doc! { "_id": 1 }, doc! { "_id": 2, "x": "y" }]),
        });
    }
    let decoded = round_trip(&msg);
    assert_eq!(decoded, msg);
    let Op::Msg(m) = decoded.op else { panic!("not OP_MSG") };
    let cmd = m.into_command().expect("merge");
    assert_eq!(
        cmd,
        doc! { "insert": "c", "$db": "test", "documents": [{ "_id": 1 }, { "_id": 2, "x": "y" }] }
    );
}

#[test]
fn sequence_duplicating_a_body_field_is_rejected() {
    let m = OpMsg {
        flags: 0,
        body: doc! { "insert": "c", "documents": [] },
        sequences: vec![DocumentSequence { identifier: "documents".into(), documents: vec![] }],
    };
    let e = m.into_command().expect_err("duplicate");
    assert!(e.contains("documents"), "{e}");
}

#[test]
fn op_msg_checksum_is_emitted_and_verified() {
    let msg = Message::msg(9, 0, msg_flags::CHECKSUM_PRESENT, hello());
    let bytes = encode(&msg).expect("encode");
    let stored = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    assert_eq!(stored, crc32c::crc32c(&bytes[..bytes.len() - 4]));
    assert_eq!(round_trip(&msg), msg);

    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(framing(&bad).contains("checksum"));

    // Damage inside the body is caught by the checksum too, as a framing error.
    let mut bad = bytes;
    bad[30] ^= 0x01;
    assert!(decode(&bad).expect_err("damaged").is_fatal());
}

#[test]
fn checksum_flag_on_a_too_short_message_is_fatal() {
    let body = msg_flags::CHECKSUM_PRESENT.to_le_bytes();
    framing(&frame(1, op_code::MSG, &body));
}

#[test]
fn flags_are_reported() {
    let msg = Message::msg(
        1,
        0,
        msg_flags::MORE_TO_COME | msg_flags::EXHAUST_ALLOWED,
        doc! { "insert": "c", "$db": "t" },
    );
    let Op::Msg(m) = round_trip(&msg).op else { panic!("not OP_MSG") };
    assert!(m.more_to_come());
    assert!(m.exhaust_allowed());
    assert!(!m.checksum_present());
}

#[test]
fn unknown_required_flag_is_malformed_but_optional_bits_are_not() {
    let mut body = (1_u32 << 5).to_le_bytes().to_vec();
    body.push(0);
    body.extend(doc_bytes(&hello()));
    let m = malformed(&frame(3, op_code::MSG, &body));
    assert_eq!(m.kind, MalformedKind::Protocol);
    assert_eq!(m.request_id, 3);

    let mut body = (1_u32 << 20).to_le_bytes().to_vec();
    body.push(0);
    body.extend(doc_bytes(&hello()));
    assert!(decode(&frame(3, op_code::MSG, &body)).is_ok());
}

#[test]
fn op_query_and_op_reply_round_trip() {
    let q = Message {
        request_id: 1,
        response_to: 0,
        compressor: None,
        op: Op::Query(OpQuery {
            flags: 0,
            full_collection_name: "admin.$cmd".into(),
            number_to_skip: 0,
            number_to_return: -1,
            query: doc! { "isMaster": 1 },
            return_fields_selector: None,
        }),
    };
    assert_eq!(round_trip(&q), q);

    let mut with_fields = q.clone();
    if let Op::Query(query) = &mut with_fields.op {
        query.return_fields_selector = Some(doc! { "a": 1 });
    }
    assert_eq!(round_trip(&with_fields), with_fields);

    let r = Message::reply(2, 1, doc! { "ismaster": true, "ok": 1.0 });
    assert_eq!(round_trip(&r), r);
}

#[test]
fn every_compressor_round_trips() {
    for c in [Compressor::Noop, Compressor::Snappy, Compressor::Zlib, Compressor::Zstd] {
        for flags in [0, msg_flags::CHECKSUM_PRESENT] {
            let mut msg = Message::msg(5, 4, flags, doc! { "ping": 1, "pad": "x".repeat(1000) });
            msg.compressor = Some(c);
            let bytes = encode(&msg).expect("encode");
            assert_eq!(
                i32::from_le_bytes(bytes[12..16].try_into().expect("4")),
                op_code::COMPRESSED
            );
            assert_eq!(bytes[24], c.id());
            if c != Compressor::Noop {
                assert!(bytes.len() < 1000, "{c:?} did not compress: {} bytes", bytes.len());
            }
            assert_eq!(round_trip(&msg), msg, "{c:?}");
        }
        let mut reply = Message::reply(1, 2, doc! { "ok": 1.0 });
        reply.compressor = Some(c);
        assert_eq!(round_trip(&reply), reply);
    }
}

#[test]
fn compressor_names_and_ids() {
    for c in [Compressor::Noop, Compressor::Snappy, Compressor::Zlib, Compressor::Zstd] {
        assert_eq!(Compressor::from_id(c.id()), Some(c));
        assert_eq!(Compressor::from_name(c.name()), Some(c));
    }
    assert_eq!(Compressor::Snappy.id(), 1);
    assert_eq!(Compressor::Zlib.id(), 2);
    assert_eq!(Compressor::Zstd.id(), 3);
    assert_eq!(Compressor::from_id(4), None);
    assert_eq!(Compressor::from_name("lz4"), None);
}

/// An OP_COMPRESSED frame with explicit fields.
fn compressed_frame(original: i32, size: i32, id: u8, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&original.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    body.push(id);
    body.extend_from_slice(data);
    frame(11, op_code::COMPRESSED, &body)
}

#[test]
fn compressed_errors() {
    // Unknown compressor, unknown inner opcode, absurd size, truncated header: framing.
    framing(&compressed_frame(op_code::MSG, 10, 9, b"0123456789"));
    framing(&compressed_frame(1234, 10, 0, b"0123456789"));
    framing(&compressed_frame(op_code::COMPRESSED, 10, 0, b"0123456789"));
    framing(&compressed_frame(op_code::MSG, -1, 0, b""));
    framing(&compressed_frame(op_code::MSG, MAX_MESSAGE_SIZE as i32, 0, b""));
    framing(&frame(1, op_code::COMPRESSED, &[0, 0, 0]));

    // Garbage compressed data, or a size that does not match: malformed, with the context.
    for id in 1..=3 {
        let m = malformed(&compressed_frame(op_code::MSG, 100, id, b"definitely not compressed"));
        assert_eq!(m.kind, MalformedKind::Protocol);
        assert_eq!(m.request_id, 11);
        assert_eq!(m.op_code, op_code::MSG);
        assert_eq!(m.compressor, Compressor::from_id(id));
    }
    let mut inner = 0_u32.to_le_bytes().to_vec();
    inner.push(0);
    inner.extend(doc_bytes(&hello()));
    for c in [Compressor::Snappy, Compressor::Zlib, Compressor::Zstd] {
        let data = c.compress(&inner).expect("compress");
        let ok = compressed_frame(op_code::MSG, inner.len() as i32, c.id(), &data);
        assert!(decode(&ok).is_ok(), "{c:?}");
        for wrong in [inner.len() as i32 - 1, inner.len() as i32 + 1] {
            let m = malformed(&compressed_frame(op_code::MSG, wrong, c.id(), &data));
            assert_eq!(m.frame_len, HEADER_LEN + 9 + data.len());
        }
    }
}

#[test]
fn compressed_invalid_bson_is_malformed_and_keeps_the_outer_length() {
    let mut inner = msg_flags::MORE_TO_COME.to_le_bytes().to_vec();
    inner.push(0);
    inner.extend_from_slice(&[12, 0, 0, 0, 0x10, b'a', 0, 1, 0, 0, 0, 1]); // bad terminator
    let data = Compressor::Zlib.compress(&inner).expect("compress");
    let bytes = compressed_frame(op_code::MSG, inner.len() as i32, 2, &data);
    let m = malformed(&bytes);
    assert_eq!(m.kind, MalformedKind::InvalidBson);
    assert_eq!(m.frame_len, bytes.len());
    assert!(m.more_to_come);
    assert_eq!(m.compressor, Some(Compressor::Zlib));
}

#[test]
fn incomplete_frames_return_none() {
    let bytes = encode(&Message::msg(1, 0, 0, hello())).expect("encode");
    for n in 0..bytes.len() {
        assert_eq!(decode(&bytes[..n]), Ok(None), "prefix of {n} bytes");
    }
    // Two frames back to back: the first is decoded, and the length says where the next starts.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let (_, used) = decode(&two).expect("decode").expect("frame");
    assert_eq!(used, bytes.len());
    assert!(decode(&two[used..]).expect("decode").is_some());
}

#[test]
fn bad_lengths_are_fatal() {
    for len in [-1_i32, 0, 15, i32::MAX, (MAX_MESSAGE_SIZE + 1) as i32] {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 12]);
        assert!(decode(&bytes).expect_err("length").is_fatal(), "{len}");
    }
    // The length is rejected as soon as it is readable, before the frame is buffered.
    assert!(framing(&(MAX_MESSAGE_SIZE as i32 + 1).to_le_bytes()).contains("maximum"));
}

#[test]
fn unknown_opcodes_are_fatal() {
    for op in [0, 2001, 2002, 2005, 2006, 2010, 2011, 9999] {
        assert!(framing(&frame(1, op, &[0; 8])).contains("opcode"), "{op}");
    }
}

#[test]
fn op_msg_structure_errors_are_malformed() {
    let body_doc = doc_bytes(&hello());
    let cases: Vec<(&str, Vec<u8>, MalformedKind)> = vec![
        ("no flags", vec![0, 0], MalformedKind::Protocol),
        ("no body", vec![0, 0, 0, 0], MalformedKind::Protocol),
        (
            "unknown section kind",
            [&[0, 0, 0, 0, 2][..], &body_doc].concat(),
            MalformedKind::Protocol,
        ),
        (
            "two bodies",
            [&[0, 0, 0, 0, 0][..], &body_doc, &[0], &body_doc].concat(),
            MalformedKind::Protocol,
        ),
        (
            "document length too long",
            [&[0, 0, 0, 0, 0][..], &[200, 0, 0, 0, 0]].concat(),
            MalformedKind::InvalidBson,
        ),
        (
            "document length negative",
            [&[0, 0, 0, 0, 0][..], &[255, 255, 255, 255, 0]].concat(),
            MalformedKind::InvalidBson,
        ),
        ("truncated document length", vec![0, 0, 0, 0, 0, 5, 0], MalformedKind::InvalidBson),
        (
            "bad element type",
            [&[0, 0, 0, 0, 0][..], &[8, 0, 0, 0, 0x77, b'a', 0, 0]].concat(),
            MalformedKind::InvalidBson,
        ),
        (
            "invalid utf-8 string",
            [&[0, 0, 0, 0, 0][..], &[14, 0, 0, 0, 2, b'a', 0, 2, 0, 0, 0, 0xff, 0, 0]].concat(),
            MalformedKind::InvalidBson,
        ),
        (
            "sequence size too big",
            [&[0, 0, 0, 0, 0][..], &body_doc, &[1, 100, 0, 0, 0, b'x', 0]].concat(),
            MalformedKind::Protocol,
        ),
        (
            "sequence size too small",
            [&[0, 0, 0, 0, 0][..], &body_doc, &[1, 2, 0, 0, 0]].concat(),
            MalformedKind::Protocol,
        ),
        (
            "sequence without identifier terminator",
            [&[0, 0, 0, 0, 0][..], &body_doc, &[1, 6, 0, 0, 0, b'x', b'y']].concat(),
            MalformedKind::Protocol,
        ),
        (
            "sequence with bad document",
            [&[0, 0, 0, 0, 0][..], &body_doc, &[1, 10, 0, 0, 0, b'x', 0, 5, 0, 0, 0]].concat(),
            MalformedKind::InvalidBson,
        ),
    ];
    for (name, body, kind) in cases {
        let m = malformed(&frame(21, op_code::MSG, &body));
        assert_eq!(m.kind, kind, "{name}: {}", m.message);
        assert_eq!(m.request_id, 21, "{name}");
        assert_eq!(m.op_code, op_code::MSG, "{name}");
        assert_eq!(m.frame_len, HEADER_LEN + body.len(), "{name}");
    }
}

#[test]
fn op_query_and_reply_structure_errors_are_malformed() {
    let q = doc_bytes(&doc! { "isMaster": 1 });
    let ns = b"admin.$cmd\0";
    let cases: Vec<Vec<u8>> = vec![
        vec![0, 0],
        [&[0, 0, 0, 0][..], b"admin.$cmd"].concat(),
        [&[0, 0, 0, 0][..], &[b'a', 0xff, 0]].concat(),
        [&[0, 0, 0, 0][..], ns, &[0, 0, 0, 0]].concat(),
        [&[0, 0, 0, 0][..], ns, &[0; 8], &[5, 0, 0]].concat(),
        [&[0, 0, 0, 0][..], ns, &[0; 8], &q, &[1, 2, 3]].concat(),
    ];
    for body in cases {
        let m = malformed(&frame(2, op_code::QUERY, &body));
        assert_eq!(m.op_code, op_code::QUERY);
    }
    let d = doc_bytes(&doc! { "ok": 1 });
    let reply_cases: Vec<Vec<u8>> = vec![
        vec![0; 10],
        [&[0; 16][..], &2_i32.to_le_bytes(), &d].concat(),
        [&[0; 16][..], &(-1_i32).to_le_bytes()].concat(),
    ];
    for body in reply_cases {
        malformed(&frame(2, op_code::REPLY, &body));
    }
}

/// A document nested `depth` levels deep, built as bytes so that building it does not recurse.
fn nested_doc_bytes(depth: usize) -> Vec<u8> {
    // Each level is: len(4) type(1) "a\0"(2) <child> 0(1); the innermost child is {}.
    let mut inner = vec![5, 0, 0, 0, 0];
    for _ in 0..depth {
        let len = 4 + 1 + 2 + inner.len() + 1;
        let mut next = Vec::with_capacity(len);
        next.extend_from_slice(&(len as i32).to_le_bytes());
        next.push(0x03);
        next.extend_from_slice(b"a\0");
        next.extend_from_slice(&inner);
        next.push(0);
        inner = next;
    }
    inner
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    assert!(parse_document(&nested_doc_bytes(MAX_BSON_DEPTH - 1)).is_ok());
    let e = parse_document(&nested_doc_bytes(MAX_BSON_DEPTH)).expect_err("too deep");
    assert!(e.contains("depth"), "{e}");
    // Far deeper than any stack could recurse through.
    let body = [&[0, 0, 0, 0, 0][..], &nested_doc_bytes(200_000)].concat();
    let m = malformed(&frame(1, op_code::MSG, &body));
    assert_eq!(m.kind, MalformedKind::InvalidBson);
}

#[test]
fn encode_refuses_oversized_messages_and_nul_in_names() {
    let big = Message::msg(1, 0, 0, doc! { "x": "y".repeat(MAX_MESSAGE_SIZE) });
    assert!(matches!(encode(&big), Err(EncodeError::TooLarge(_))));
    let mut bad = Message::msg(1, 0, 0, hello());
    if let Op::Msg(m) = &mut bad.op {
        m.sequences.push(DocumentSequence { identifier: "a\0b".into(), documents: vec![] });
    }
    assert!(matches!(encode(&bad), Err(EncodeError::Bson(_))));
}

/// Random bytes and random damage to valid messages never panic, and every successful decode
/// reports a length within the input.
#[test]
fn random_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut seeds = Vec::new();
    for c in [None, Some(Compressor::Snappy), Some(Compressor::Zlib), Some(Compressor::Zstd)] {
        for flags in [0, msg_flags::CHECKSUM_PRESENT] {
            let mut m =
                Message::msg(1, 0, flags, doc! { "find": "c", "filter": { "a": [1, 2.5, "s"] } });
            m.compressor = c;
            if let Op::Msg(msg) = &mut m.op {
                msg.sequences.push(DocumentSequence {
                    identifier: "documents".into(),
                    documents: seq_docs(&[doc! { "_id": 1 }]),
                });
            }
            seeds.push(encode(&m).expect("encode"));
        }
        let mut r = Message::reply(1, 1, doc! { "ok": 1 });
        r.compressor = c;
        seeds.push(encode(&r).expect("encode"));
    }
    for _ in 0..20_000 {
        let mut bytes = if rng.random_bool(0.2) {
            let n = rng.random_range(0..64);
            (0..n).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            seeds[rng.random_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.random_range(1..4) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.random_range(0..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[i] = rng.random(),
                1 => bytes.truncate(i),
                2 => bytes.insert(i, rng.random()),
                _ => bytes[i] ^= 1 << rng.random_range(0..8),
            }
        }
        // Often keep the length prefix consistent so the damage reaches the inner parsers.
        if bytes.len() >= 4 && rng.random_bool(0.7) {
            let len = bytes.len() as i32;
            bytes[..4].copy_from_slice(&len.to_le_bytes());
        }
        if let Ok(Some((_, used))) = decode(&bytes) {
            assert!(used <= bytes.len());
        }
    }
}

/// A raw BSON document of string fields, in order, duplicates allowed (`doc!` cannot build one).
fn raw_doc(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut elems = Vec::new();
    for (k, v) in fields {
        elems.push(0x02);
        elems.extend_from_slice(k.as_bytes());
        elems.push(0);
        elems.extend_from_slice(&((v.len() + 1) as i32).to_le_bytes());
        elems.extend_from_slice(v.as_bytes());
        elems.push(0);
    }
    let mut out = ((elems.len() + 5) as i32).to_le_bytes().to_vec();
    out.extend_from_slice(&elems);
    out.push(0);
    out
}

#[test]
fn duplicate_top_level_fields_are_malformed() {
    let body = raw_doc(&[("ping", "x"), ("$db", "admin"), ("$db", "other")]);
    let m = malformed(&frame(7, op_code::MSG, &[&[0, 0, 0, 0, 0][..], &body].concat()));
    assert_eq!(m.kind, MalformedKind::DuplicateField);
    assert_eq!(m.request_id, 7);
    assert_eq!(m.message, "Parsed command object contains duplicate top level key: $db");
    // Nested documents may repeat their parent's names; only the top level is the command's.
    let body = raw_doc(&[("find", "c"), ("$db", "test")]);
    let (msg, _) = decode(&frame(8, op_code::MSG, &[&[0, 0, 0, 0, 0][..], &body].concat()))
        .expect("decode")
        .expect("complete");
    assert!(matches!(msg.op, Op::Msg(_)));
}

#[test]
fn a_pre_encoded_body_encodes_as_the_same_message() {
    let body = doc! { "cursor": { "firstBatch": [{ "_id": 1, "s": "x".repeat(300) }], "id": 0_i64 }, "ok": 1.0 };
    for flags in [0, msg_flags::CHECKSUM_PRESENT, msg_flags::MORE_TO_COME] {
        for compressor in
            [None, Some(Compressor::Noop), Some(Compressor::Zlib), Some(Compressor::Zstd)]
        {
            let mut msg = Message::msg(7, 3, flags, body.clone());
            msg.compressor = compressor;
            let whole = encode(&msg).expect("encode");
            let pre = encode_msg_body(7, 3, flags, compressor, &doc_bytes(&body)).expect("encode");
            assert_eq!(pre, whole, "flags {flags}, {compressor:?}");
            assert_eq!(round_trip(&msg).op, msg.op);
        }
    }
}

#[test]
fn a_request_s_cluster_time_is_checked_and_left_out() {
    // A body as a driver sends it: the `$clusterTime` of a reply, gossiped back.
    let mut times = bson::rawdoc! {}.into_bytes();
    append_times(&mut times, bson::Timestamp { time: 9, increment: 2 }).unwrap();
    let times = bson::RawDocumentBuf::from_bytes(times).unwrap();
    let mut body = bson::rawdoc! { "ping": 1, "$db": "admin" };
    body.append(bson::raw::cstr!("$clusterTime"), times.get_document("$clusterTime").unwrap());
    let op = |doc: &[u8]| {
        let mut op = 0_u32.to_le_bytes().to_vec();
        op.push(0);
        op.extend_from_slice(doc);
        frame(5, op_code::MSG, &op)
    };
    let (msg, _) = decode_request(&op(body.as_bytes())).unwrap().unwrap();
    let Op::Msg(m) = msg.op else { panic!("an OP_MSG") };
    assert_eq!(m.body, doc! { "ping": 1, "$db": "admin" });
    // Not this server's encoding any more: the key id's type byte says string, whose length
    // then runs past the document. It is walked, and refused.
    let mut bad = body.as_bytes().to_vec();
    let key_id = bad.windows(6).position(|w| w == b"keyId\0").unwrap() - 1;
    assert_eq!(bad[key_id], 0x12);
    bad[key_id] = 0x02;
    match decode_request(&op(&bad)) {
        Err(WireError::Malformed(m)) => assert_eq!(m.kind, MalformedKind::InvalidBson),
        other => panic!("expected invalid BSON, got {other:?}"),
    }
}
