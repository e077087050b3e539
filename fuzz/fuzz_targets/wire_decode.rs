//! The wire decoder on arbitrary bytes: it must never panic, and whatever it decodes must encode
//! to bytes that decode to a message encoding to the same bytes (compared as bytes, because a
//! NaN in a document is not equal to itself).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = folio_wire::frame_len(data);
    let Ok(Some((msg, used))) = folio_wire::decode(data) else {
        return;
    };
    assert!(used <= data.len());
    // Re-encoding can fail for a legitimate reason only when compression makes the message
    // larger than the maximum size; anything that encodes must decode to the same message.
    if let Ok(bytes) = folio_wire::encode(&msg) {
        let (again, n) = folio_wire::decode(&bytes)
            .expect("an encoded message decodes")
            .expect("an encoded message is complete");
        assert_eq!(n, bytes.len());
        assert_eq!(folio_wire::encode(&again).expect("re-encode"), bytes);
    }
    if let folio_wire::Op::Msg(m) = msg.op {
        let _ = m.into_command();
    }
});
