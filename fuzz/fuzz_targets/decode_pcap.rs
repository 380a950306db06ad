//! `cma decode --pcap` on arbitrary file contents must never panic.
#![no_main]

use cma::decode::{DecodeInput, run_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = data.first().is_some_and(|b| b & 1 == 1);
    let (mut out, mut err) = (std::io::sink(), std::io::sink());
    let _ = run_decode(DecodeInput::Pcap(data.to_vec()), text, None, &mut out, &mut err);
});
