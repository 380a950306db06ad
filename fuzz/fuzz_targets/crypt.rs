//! The crypt frame and encrypted FrameSets: parsing and opening never
//! panic; whatever opens is the plaintext it was sealed from (the seeds
//! are sealed with the fixture's keys); a FrameSet accepted in clear,
//! sealed and opened again, is the same message; and with one byte of its
//! crypt frame changed (SIG made good again) it does not open.
#![no_main]

use cma::classify::{FRAMESET_HEADER_LEN, Frame, FrameType, classify, classify_with, seal};
use cma::crypt::{fixture, seal_frameset_with_nonce};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ring, id, shared) = fixture();
    let _ = Frame::parse(FrameType::CryptCurve25519.to_wire(), data);
    if let Ok(c) = classify_with(data, Some(&ring)) {
        let _ = c.message();
    }
    let Ok(clear) = classify(data) else { return };
    let Ok(m) = clear.message() else { return };
    let view_len = clear.wire_len;
    let mut sealed = Vec::new();
    if seal_frameset_with_nonce(&id, "#CMA#00000", &shared, &[9; 24], &data[..view_len], &mut sealed)
        .is_err()
    {
        return;
    }
    let opened = classify_with(&sealed, Some(&ring)).expect("sealed for the CMA, it opens");
    assert_eq!(opened.message().expect("same payload"), m);
    assert_eq!(opened.reqid, clear.reqid);
    assert_eq!(opened.sender_key.as_deref(), Some(id.as_str()));
    // One byte of the crypt frame changed, the SIG made good again.
    let sig_end = FRAMESET_HEADER_LEN + 5 + 2 + clear.digest.digest_len();
    let mut frames = sealed[sig_end..].to_vec();
    let at = data.len() % frames.len();
    frames[at] ^= 0x5a;
    let mut forged = Vec::new();
    seal(opened.fstype, &frames, clear.digest, &mut forged);
    assert!(classify_with(&forged, Some(&ring)).is_err(), "a changed byte at {at} opened");
});
