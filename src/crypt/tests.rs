use super::*;
use crate::classify::{
    EncodeOptions, FRAMESET_HEADER_LEN, Frame, FrameIter, FrameSetView, Message, ReqId, classify,
    classify_with, encode,
};

fn cma_ring() -> Keyring {
    Keyring::in_memory(&[("#CMA#00000", [7; 32])], false)
}

/// A nanoprobe's key pair and id for `host`, trusted by `ring`.
fn probe(ring: &Keyring, host: &str, secret: [u8; 32]) -> (String, SalsaBox) {
    let public = public_of(&secret);
    let id = nanoprobe_key_id(host, &public);
    assert!(matches!(
        ring.admit(host, &id, &public),
        Admission::Trusted(_)
    ));
    let shared = salsa_box(&ring.sending_key().public, &secret);
    (id, shared)
}

fn hbdead(request: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    encode(
        &Message::HbDead {
            peer: "10.0.0.2:1984".parse().unwrap(),
        },
        Some(ReqId {
            session: 1,
            request,
            queue: 0,
        }),
        &EncodeOptions::default(),
        &mut wire,
    )
    .unwrap();
    wire
}

#[test]
fn a_sealed_frameset_classifies_as_its_plaintext_with_its_key() {
    let ring = cma_ring();
    let (id, shared) = probe(&ring, "web1", [3; 32]);
    let clear = hbdead(5);
    let mut sealed = Vec::new();
    seal_frameset(&id, "#CMA#00000", &shared, &clear, &mut sealed).unwrap();
    assert_ne!(sealed, clear);
    let c = classify_with(&sealed, Some(&ring)).unwrap();
    let plain = classify(&clear).unwrap();
    assert_eq!(c.message(), plain.message());
    assert_eq!(c.reqid, plain.reqid);
    assert_eq!(c.sender_key.as_deref(), Some(id.as_str()));
    // Without keys the CMA cannot read it, and says why.
    assert_eq!(
        classify(&sealed).unwrap_err().reason,
        Drop::EncryptedUnsupported
    );
}

#[test]
fn what_the_cma_seals_a_nanoprobe_opens() {
    let ring = cma_ring();
    let secret = [9; 32];
    let (id, _) = probe(&ring, "db2", secret);
    let peer = ring.peer(&id).unwrap();
    let clear = hbdead(1);
    let mut sealed = Vec::new();
    ring.seal(&peer, &clear, &mut sealed).unwrap();
    // Open as the nanoprobe would: its secret, the CMA's public key.
    let fs = FrameSetView::new_checked(&sealed).unwrap();
    let mut it = FrameIter::new(fs.frames(), FRAMESET_HEADER_LEN);
    it.next().unwrap().unwrap();
    let cf = it.next().unwrap().unwrap();
    let Ok(Frame::Crypt(h)) = Frame::parse(cf.ftype, cf.value) else {
        panic!("no crypt frame");
    };
    assert_eq!(h.sender_key_id, "#CMA#00000");
    assert_eq!(h.receiver_key_id, id);
    let theirs = salsa_box(&ring.sending_key().public, &secret);
    let plain = open_with(&theirs, &h).unwrap();
    let sig_end = FRAMESET_HEADER_LEN + cf.offset - FRAMESET_HEADER_LEN;
    let clear_sig_end = sig_end;
    assert_eq!(plain, clear[clear_sig_end..]);
}

#[test]
fn wrong_keys_and_strangers_are_refused() {
    let ring = cma_ring();
    let (id, shared) = probe(&ring, "web1", [3; 32]);
    let clear = hbdead(5);
    // A key the CMA never trusted.
    let stranger = salsa_box(&ring.sending_key().public, &[4; 32]);
    let sid = nanoprobe_key_id("evil", &public_of(&[4; 32]));
    let mut sealed = Vec::new();
    seal_frameset(&sid, "#CMA#00000", &stranger, &clear, &mut sealed).unwrap();
    assert_eq!(
        classify_with(&sealed, Some(&ring)).unwrap_err().reason,
        Drop::UnknownKey
    );
    // A trusted key id, but sealed with another key: the MAC fails.
    sealed.clear();
    seal_frameset(&id, "#CMA#00000", &stranger, &clear, &mut sealed).unwrap();
    assert_eq!(
        classify_with(&sealed, Some(&ring)).unwrap_err().reason,
        Drop::DecryptFailed
    );
    // For a receiver key that is not the CMA's.
    sealed.clear();
    seal_frameset(&id, "#CMA#00009", &shared, &clear, &mut sealed).unwrap();
    assert_eq!(
        classify_with(&sealed, Some(&ring)).unwrap_err().reason,
        Drop::NotOurKey
    );
}

#[test]
fn a_host_keeps_its_first_key() {
    let ring = cma_ring();
    let (id, _) = probe(&ring, "web1", [3; 32]);
    let other = public_of(&[5; 32]);
    let other_id = nanoprobe_key_id("web1", &other);
    match ring.admit("WEB1", &other_id, &other) {
        Admission::Refused(Refusal::KeyChanged { known }) => assert_eq!(known, id),
        a => panic!("{a:?}"),
    }
    // A key id that does not name the host and key is refused.
    let mismatch = nanoprobe_key_id("web2", &other);
    assert!(matches!(
        ring.admit("web1", &mismatch, &other),
        Admission::Refused(Refusal::BadKeyId)
    ));
    // Only known keys when asked.
    let strict = Keyring::in_memory(&[("#CMA#00000", [7; 32])], true);
    assert!(matches!(
        strict.admit("web1", &id, &public_of(&[3; 32])),
        Admission::Refused(Refusal::Unknown)
    ));
}

#[test]
fn the_key_directory_trusts_on_first_use_and_the_operator_decides_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("keys");
    assert!(
        Keyring::load(&d, false).unwrap().is_none(),
        "no key, no ring"
    );
    let (cma_id, cma_pub) = keydir::init(&d, false).unwrap();
    assert_eq!(cma_id, "#CMA#00000");
    assert!(keydir::init(&d, false).is_err(), "one first key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode(&keydir::secret_path(&d, &cma_id)), 0o600);
    assert_eq!(mode(&keydir::public_path(&d, &cma_id)), 0o644);
    assert_eq!(keydir::read_public(&d, &cma_id).unwrap(), cma_pub);

    let ring = Keyring::load(&d, false).unwrap().unwrap();
    let k1 = public_of(&[1; 32]);
    let id1 = nanoprobe_key_id("web1", &k1);
    assert!(matches!(
        ring.admit("web1", &id1, &k1),
        Admission::Trusted(_)
    ));
    assert!(keydir::public_path(&d, &id1).exists(), "saved on first use");
    // A restart reads it back.
    let ring = Keyring::load(&d, false).unwrap().unwrap();
    assert!(ring.peer(&id1).is_some());
    // A new key for web1: refused and kept for the operator.
    let k2 = public_of(&[2; 32]);
    let id2 = nanoprobe_key_id("web1", &k2);
    assert!(matches!(
        ring.admit("web1", &id2, &k2),
        Admission::Refused(Refusal::KeyChanged { .. })
    ));
    let listed = keydir::list(&d).unwrap();
    assert_eq!(listed[0].role, "cma");
    assert!(listed.iter().any(|l| l.id == id2 && l.role == "refused"));
    // The operator trusts it: the running ring takes it at the next STARTUP.
    assert_eq!(keydir::trust(&d, "web1").unwrap(), id2);
    assert!(matches!(
        ring.admit("web1", &id2, &k2),
        Admission::Trusted(_)
    ));
    assert!(ring.peer(&id1).is_none());
    // Forgotten: the next key is a first use again...
    let strict = Keyring::load(&d, true).unwrap().unwrap();
    keydir::forget(&d, "web1").unwrap();
    assert!(matches!(
        ring.admit("web1", &id1, &k1),
        Admission::Trusted(_)
    ));
    // ... unless only known keys are trusted: then the operator trusts it
    // first.
    keydir::forget(&d, "web1").unwrap();
    assert!(matches!(
        strict.admit("web1", &id2, &k2),
        Admission::Refused(Refusal::Unknown)
    ));
    keydir::trust(&d, "web1").unwrap();
    assert!(matches!(
        strict.admit("web1", &id2, &k2),
        Admission::Trusted(_)
    ));
    // A secret readable by others is refused at load.
    std::fs::set_permissions(
        keydir::secret_path(&d, &cma_id),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(Keyring::load(&d, false).is_err());
}

proptest::proptest! {
    /// decrypt(encrypt(x)) = x for any FrameSet, and any one bit flipped
    /// after the header makes it refused (SIG or MAC), never accepted as
    /// something else.
    #[test]
    fn sealed_framesets_round_trip_and_resist_bit_flips(
        json in "[a-z0-9 ]{0,400}",
        request in 1u64..1_000_000,
        flip in 0usize..10_000,
        bit in 0u8..8,
    ) {
        let ring = cma_ring();
        let (id, shared) = probe(&ring, "web1", [3; 32]);
        let mut clear = Vec::new();
        encode(
            &Message::Stats { json: &json },
            Some(ReqId { session: 2, request, queue: 0 }),
            &EncodeOptions::default(),
            &mut clear,
        ).unwrap();
        let mut sealed = Vec::new();
        seal_frameset(&id, "#CMA#00000", &shared, &clear, &mut sealed).unwrap();
        let c = classify_with(&sealed, Some(&ring)).unwrap();
        let plain = classify(&clear).unwrap();
        proptest::prop_assert_eq!(c.message(), plain.message());
        proptest::prop_assert_eq!(c.reqid, plain.reqid);

        let mut flipped = sealed.clone();
        let at = FRAMESET_HEADER_LEN + flip % (sealed.len() - FRAMESET_HEADER_LEN);
        flipped[at] ^= 1 << bit;
        proptest::prop_assert!(classify_with(&flipped, Some(&ring)).is_err());
        // The same flip in the crypt frame with the SIG made good again:
        // the MAC (or the key ids) refuse it.
        let sig_end = FRAMESET_HEADER_LEN + 5 + 2 + 32;
        let mut frames = sealed[sig_end..].to_vec();
        let at = flip % frames.len();
        frames[at] ^= 1 << bit;
        let mut resealed = Vec::new();
        crate::classify::seal(c.fstype, &frames, crate::classify::DigestKind::Sha256, &mut resealed);
        proptest::prop_assert!(classify_with(&resealed, Some(&ring)).is_err());
    }
}
