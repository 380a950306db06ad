//! Our crypto_box (the `crypto_box` crate's SalsaBox) against libsodium
//! itself, Debian's, as the nanoprobe links it: the same keys and nonce
//! make the same bytes, and each opens what the other sealed. Needs a C
//! compiler and libsodium's headers (installed by ../shared/nanoprobe's
//! build.sh); without them it says in one line that it was skipped.

use std::process::Command;

use cma::crypt::{public_of, salsa_box};
use crypto_box::aead::AeadInPlace;

const HELPER: &str = r#"
#include <sodium.h>
#include <stdio.h>
#include <string.h>
static void hex(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
    printf("\n");
}
int main(int argc, char **argv) {
    unsigned char sk1[32], sk2[32], pk1[32], pk2[32], nonce[24];
    unsigned char msg[200], ct[216], back[200];
    if (sodium_init() < 0) return 2;
    memset(sk1, 1, 32); memset(sk2, 2, 32); memset(nonce, 5, 24);
    for (int i = 0; i < 200; i++) msg[i] = (unsigned char)(i * 7);
    crypto_scalarmult_base(pk1, sk1);
    crypto_scalarmult_base(pk2, sk2);
    hex(pk1, 32);
    hex(pk2, 32);
    /* From 1 to 2: MAC || ciphertext. */
    if (crypto_box_easy(ct, msg, 200, nonce, pk2, sk1) != 0) return 3;
    hex(ct, 216);
    /* Open what Rust sealed from 2 to 1 (argv[1], hex). */
    if (argc > 1) {
        unsigned char in[216];
        for (int i = 0; i < 216; i++) sscanf(argv[1] + 2 * i, "%2hhx", &in[i]);
        if (crypto_box_open_easy(back, in, 216, nonce, pk2, sk1) != 0) return 4;
        hex(back, 200);
    }
    return 0;
}
"#;

#[test]
fn crypto_box_matches_libsodium_byte_for_byte() {
    if !std::path::Path::new("/usr/include/sodium.h").exists() {
        eprintln!("libsodium comparison skipped: no /usr/include/sodium.h (libsodium-dev)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("box.c");
    let bin = dir.path().join("box");
    std::fs::write(&src, HELPER).unwrap();
    let built = Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg("-lsodium")
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("libsodium comparison skipped: cannot build the helper: {other:?}");
            return;
        }
    }
    let msg: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let nonce = [5u8; 24];
    let (sk1, sk2) = ([1u8; 32], [2u8; 32]);
    // What we seal from 2 to 1, for the helper to open.
    let mut ours = msg.clone();
    let tag = salsa_box(&public_of(&sk1), &sk2)
        .encrypt_in_place_detached(crypto_box::Nonce::from_slice(&nonce), b"", &mut ours)
        .unwrap();
    let mut sealed = tag.to_vec();
    sealed.extend_from_slice(&ours);
    let out = Command::new(&bin)
        .arg(hex::encode(&sealed))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines[0], hex::encode(public_of(&sk1)), "public key 1");
    assert_eq!(lines[1], hex::encode(public_of(&sk2)), "public key 2");
    // libsodium's box from 1 to 2 is ours, byte for byte.
    let mut theirs = msg.clone();
    let tag = salsa_box(&public_of(&sk2), &sk1)
        .encrypt_in_place_detached(crypto_box::Nonce::from_slice(&nonce), b"", &mut theirs)
        .unwrap();
    let mut expect = tag.to_vec();
    expect.extend_from_slice(&theirs);
    assert_eq!(lines[2], hex::encode(&expect), "crypto_box_easy");
    // ... and it opened ours.
    assert_eq!(lines[3], hex::encode(&msg), "crypto_box_open_easy");
}
