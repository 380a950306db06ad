//! classify must never panic; whatever it accepts must re-encode to a
//! FrameSet that classifies to the same message and REQID. The same bytes
//! also go through the decoder and the LLDP/CDP parser.
#![no_main]

use cma::classify::{EncodeOptions, classify, classify_all, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in classify_all(data).flatten() {
        let Ok(m) = c.message() else { continue };
        let opts = EncodeOptions {
            digest: c.digest,
            ..EncodeOptions::default()
        };
        let mut again = Vec::new();
        // A FrameSet that arrived compressed may not fit a datagram once
        // re-encoded with another zlib level: that is a refusal, not a bug.
        if encode(&m, c.reqid, &opts, &mut again).is_err() {
            continue;
        }
        let c2 = classify(&again).expect("a re-encoded FrameSet classifies");
        assert_eq!(c2.reqid, c.reqid);
        assert_eq!(c2.fstype, c.fstype);
        assert_eq!(c2.message().expect("re-encoded payload parses"), m);
    }
    // The decoder walks the same bytes differently (frames of dropped
    // FrameSets, inflation for display): it must not panic either.
    let _ = cma::decode::decode_datagram(data, &serde_json::Value::Null);
    // SWDISCOVER's payload: LLDP/CDP frames from the wire.
    let _ = cma::classify::switch::parse_switch_frame(data);
});
