//! Helpers shared by the integration tests.

use std::path::PathBuf;

use cma::classify::{DigestKind, EncodeOptions, Frame, Message, ReqId, encode, seal};

/// The test data in the repository (`tests/data`: captures of a real
/// nanoprobe, real LLDP/CDP frames; its README says where each came from).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The capture lines of a `tests/data/*.tsv` file: (name, bytes).
pub fn capture(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split('\t');
            let name = fields.next().unwrap().to_string();
            let bytes = hex::decode(fields.next().unwrap()).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Frames written one after another.
pub fn frames(list: &[Frame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in list {
        f.emit(&mut out);
    }
    out
}

/// A raw frame with any type and value bytes.
pub fn raw_frame(ftype: u16, value: &[u8]) -> Vec<u8> {
    let mut out = ftype.to_be_bytes().to_vec();
    out.extend_from_slice(&(value.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(value);
    out
}

/// A signed FrameSet with exactly these frames after SIG.
pub fn sealed(fstype: u16, frames: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    seal(fstype, frames, DigestKind::Sha256, &mut out);
    out
}

/// The END frame.
pub const END: [u8; 5] = [0; 5];

/// A message encoded with the default options (SHA-256, compression above
/// the C library's threshold).
pub fn encoded(m: &Message<'_>, reqid: Option<ReqId>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(m, reqid, &EncodeOptions::default(), &mut out).expect("test messages fit a datagram");
    out
}
