//! CRYPTCURVE25519: the nanoprobe's public-key encryption, byte for byte
//! (WIRE.md "Encryption"), and the CMA's keys.
//!
//! On the wire an encrypted FrameSet is `[header][SIG][CRYPTCURVE25519]`,
//! where the crypt frame holds the sender's and receiver's key ids, a
//! random 24-byte nonce, and `MAC || ciphertext` of every frame that
//! followed it (COMPRESS, REQID, payload, END) as libsodium's
//! `crypto_box_easy` makes it (X25519, XSalsa20-Poly1305). The SIG covers
//! the crypt frame: integrity is checked before decryption is tried.
//!
//! [`Keyring`] holds the CMA's key pairs (`#CMA#00000`, ...: the lowest
//! numbered one with a secret key sends, any of them receives) and the
//! nanoprobes' public keys it trusts, one per host, in a key directory laid
//! out as the nanoprobe's `crypto.d` (see [`keydir`]). A host's first key
//! is trusted on first use unless `auth.require_known_keys` is set; a
//! different key for a host already known is refused and said to the
//! operator (`cma keys trust HOST` accepts it).
//!
//! What it does not do: decide who may say what. The log thread refuses
//! unencrypted FrameSets from keyed addresses; the decider binds a node to
//! its key (DESIGN.md rule 9).

pub mod cli;
pub mod keydir;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crypto_box::aead::{AeadCore, AeadInPlace, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};

use crate::classify::{CryptHeader, Drop, FRAME_HEADER_LEN, FrameType, is_key_id};

pub use keydir::{KeyDirError, cma_key_id, nanoprobe_key_id};

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 MAC.
pub const MAC_LEN: usize = 16;
/// Bytes of an X25519 key (public or secret).
pub const KEY_LEN: usize = 32;
/// The identity the nanoprobe gives every `#CMA#` key.
pub const CMA_IDENTITY: &str = "**CMA**";
/// The prefix of the CMA's key ids.
pub const CMA_KEY_PREFIX: &str = "#CMA#";

/// One of the CMA's key pairs.
pub struct CmaKey {
    /// `#CMA#NNNNN`.
    pub id: String,
    secret: SecretKey,
    /// Its public key (what a nanoprobe needs in its crypto.d).
    pub public: [u8; KEY_LEN],
}

impl fmt::Debug for CmaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CmaKey({})", self.id)
    }
}

/// A nanoprobe's trusted public key, with the box shared with the CMA's
/// sending key computed once (an X25519 multiplication costs ~40 us; a
/// box over a short FrameSet ~1 us).
pub struct PeerKey {
    /// `<host>@@<MD5 hex of the key>`.
    pub id: Arc<str>,
    /// The key.
    pub public: [u8; KEY_LEN],
    /// With the CMA's sending key.
    shared: SalsaBox,
    /// The CMA's sending key id.
    sender: Arc<str>,
}

impl PeerKey {
    /// Encrypts the FrameSet `wire` for this nanoprobe, from the CMA's
    /// sending key, into `out`.
    pub fn seal(&self, wire: &[u8], out: &mut Vec<u8>) -> Result<(), Drop> {
        seal_frameset(&self.sender, &self.id, &self.shared, wire, out)
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({})", self.id)
    }
}

/// What [`Keyring::admit`] made of a STARTUP's key.
#[derive(Debug)]
pub enum Admission {
    /// Trusted (already, or on first use now).
    Trusted(Arc<PeerKey>),
    /// Refused: the reason, for the operator.
    Refused(Refusal),
}

/// Why a STARTUP's key is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key id is not `<host>@@<MD5 of the key>` for this host.
    BadKeyId,
    /// The host is known with another key.
    KeyChanged {
        /// The key id trusted for the host.
        known: String,
    },
    /// `auth.require_known_keys` and the key is not in the directory.
    Unknown,
    /// The key could not be saved (the directory is not writable).
    Unsaved(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadKeyId => write!(f, "its key id does not name its host and key"),
            Refusal::KeyChanged { known } => write!(
                f,
                "the host is known with key {known} (`cma keys trust HOST` accepts the new one)"
            ),
            Refusal::Unknown => write!(
                f,
                "auth.require_known_keys is set and the key is not trusted (`cma keys trust HOST`)"
            ),
            Refusal::Unsaved(e) => write!(f, "the key could not be saved: {e}"),
        }
    }
}

/// The CMA's keys and the nanoprobes' trusted keys; shared by the log
/// thread (decrypts, admits), the sync thread (ACKs) and the decider's
/// sending side (instructions).
pub struct Keyring {
    dir: PathBuf,
    /// Sorted by id: `ours[0]` sends.
    ours: Vec<CmaKey>,
    require_known: bool,
    peers: RwLock<Peers>,
    /// Hosts whose refused key was kept in `refused/` (at most
    /// [`REFUSED_KEPT_MAX`] per run, one per host: strangers cannot fill
    /// the disk with keys).
    refused_kept: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Refused keys kept for the operator per run, at most.
pub const REFUSED_KEPT_MAX: usize = 1024;

#[derive(Default)]
struct Peers {
    by_id: HashMap<Arc<str>, Arc<PeerKey>>,
    /// Lower-case host name -> its trusted key id.
    by_host: HashMap<String, Arc<str>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keyring({}, {} keys)",
            self.dir.display(),
            self.ours.len()
        )
    }
}

impl Keyring {
    /// Loads the key directory: `None` when it holds no CMA secret key
    /// (the CMA then runs unauthenticated).
    pub fn load(dir: &Path, require_known: bool) -> Result<Option<Keyring>, KeyDirError> {
        let files = keydir::scan(dir)?;
        let mut ours = Vec::new();
        for (id, secret) in &files.secrets {
            if id.starts_with(CMA_KEY_PREFIX) {
                let secret = SecretKey::from_bytes(*secret);
                let public = secret.public_key().to_bytes();
                ours.push(CmaKey {
                    id: id.clone(),
                    secret,
                    public,
                });
            }
        }
        if ours.is_empty() {
            return Ok(None);
        }
        ours.sort_by(|a, b| a.id.cmp(&b.id));
        let ring = Keyring {
            dir: dir.to_path_buf(),
            ours,
            require_known,
            peers: RwLock::new(Peers::default()),
            refused_kept: Default::default(),
        };
        {
            let mut p = ring.write();
            for (id, public) in &files.publics {
                let Some((host, _)) = keydir::split_nanoprobe_key_id(id) else {
                    continue;
                };
                if let Some(other) = p.by_host.get(&host) {
                    log::warn!(
                        "keys: {} holds two keys for host {host} ({other} and {id}); using {other}",
                        dir.display()
                    );
                    continue;
                }
                let k = ring.peer_key(id, *public);
                p.by_host.insert(host, k.id.clone());
                p.by_id.insert(k.id.clone(), k);
            }
        }
        Ok(Some(ring))
    }

    /// A keyring of given keys, for tests and benchmarks: no directory is
    /// read (a key trusted on first use is kept in memory only).
    pub fn in_memory(ours: &[(&str, [u8; KEY_LEN])], require_known: bool) -> Keyring {
        let mut v: Vec<CmaKey> = ours
            .iter()
            .map(|(id, s)| {
                let secret = SecretKey::from_bytes(*s);
                CmaKey {
                    id: id.to_string(),
                    public: secret.public_key().to_bytes(),
                    secret,
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Keyring {
            dir: PathBuf::new(),
            ours: v,
            require_known,
            peers: RwLock::new(Peers::default()),
            refused_kept: Default::default(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Peers> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peer_key(&self, id: &str, public: [u8; KEY_LEN]) -> Arc<PeerKey> {
        Arc::new(PeerKey {
            id: Arc::from(id),
            public,
            shared: SalsaBox::new(&PublicKey::from(public), &self.ours[0].secret),
            sender: Arc::from(self.ours[0].id.as_str()),
        })
    }

    /// The key the CMA sends under.
    pub fn sending_key(&self) -> &CmaKey {
        &self.ours[0]
    }

    /// The CMA's keys.
    pub fn ours(&self) -> &[CmaKey] {
        &self.ours
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many nanoprobe keys are trusted.
    pub fn trusted(&self) -> usize {
        self.read().by_id.len()
    }

    /// A trusted key by id.
    pub fn peer(&self, id: &str) -> Option<Arc<PeerKey>> {
        self.read().by_id.get(id).cloned()
    }

    /// The key id trusted for `host`, if any.
    pub fn host_key(&self, host: &str) -> Option<Arc<str>> {
        self.read().by_host.get(&host.to_ascii_lowercase()).cloned()
    }

    /// Trusts (or refuses) the key a STARTUP from `host` announces.
    pub fn admit(&self, host: &str, key_id: &str, public: &[u8; KEY_LEN]) -> Admission {
        let host = host.to_ascii_lowercase();
        if !is_key_id(key_id) || nanoprobe_key_id(&host, public) != key_id.to_ascii_lowercase() {
            return Admission::Refused(Refusal::BadKeyId);
        }
        let persisted = !self.dir.as_os_str().is_empty();
        if let Some(k) = self.read().by_id.get(key_id)
            && k.public == *public
            // Still in the directory (`cma keys forget` revokes it at the
            // host's next STARTUP): one stat per STARTUP, not per report.
            && (!persisted || keydir::public_path(&self.dir, key_id).exists())
        {
            return Admission::Trusted(k.clone());
        }
        let known = self.read().by_host.get(&host).cloned();
        if let Some(known) = known {
            // Forgotten by the operator since (`cma keys forget`), or the
            // new key trusted by them (`cma keys trust`)?
            let forgotten = persisted && !keydir::public_path(&self.dir, &known).exists();
            let trusted_now = persisted && keydir::public_path(&self.dir, key_id).exists();
            if !forgotten && !trusted_now {
                self.keep_refused(&host, key_id, public);
                return Admission::Refused(Refusal::KeyChanged {
                    known: known.to_string(),
                });
            }
            let mut p = self.write();
            p.by_id.remove(&known);
            p.by_host.remove(&host);
        }
        // A new key (a new host, or one forgotten by the operator) with
        // known keys only: it must be in the directory already.
        if self.require_known && !(persisted && keydir::public_path(&self.dir, key_id).exists()) {
            self.keep_refused(&host, key_id, public);
            return Admission::Refused(Refusal::Unknown);
        }
        if persisted && let Err(e) = keydir::save_public(&self.dir, key_id, public) {
            return Admission::Refused(Refusal::Unsaved(e.to_string()));
        }
        let k = self.peer_key(key_id, *public);
        let mut p = self.write();
        p.by_host.insert(host, k.id.clone());
        p.by_id.insert(k.id.clone(), k.clone());
        Admission::Trusted(k)
    }

    /// Keeps a refused key in `refused/` for `cma keys trust`: the first
    /// per host, up to [`REFUSED_KEPT_MAX`] hosts per run.
    fn keep_refused(&self, host: &str, key_id: &str, public: &[u8; KEY_LEN]) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let mut kept = self.refused_kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= REFUSED_KEPT_MAX || !kept.insert(host.to_string()) {
            return;
        }
        if let Err(e) = keydir::save_refused(&self.dir, key_id, public) {
            log::warn!("keys: the refused key {key_id} was not kept: {e}");
        }
    }

    /// Decrypts a crypt frame's ciphertext: the plaintext frames, and the
    /// sender's key.
    pub fn open(&self, h: &CryptHeader<'_>) -> Result<(Vec<u8>, Arc<PeerKey>), Drop> {
        let peer = self.peer(h.sender_key_id).ok_or(Drop::UnknownKey)?;
        let mine = self
            .ours
            .iter()
            .position(|k| k.id == h.receiver_key_id)
            .ok_or(Drop::NotOurKey)?;
        let mut plain = h.ciphertext.to_vec();
        let nonce = crypto_box::Nonce::from_slice(h.nonce);
        let tag = crypto_box::aead::Tag::<SalsaBox>::from_slice(h.mac);
        let r = if mine == 0 {
            peer.shared
                .decrypt_in_place_detached(nonce, b"", &mut plain, tag)
        } else {
            // A rotation key: rare, no cached box.
            SalsaBox::new(&PublicKey::from(peer.public), &self.ours[mine].secret)
                .decrypt_in_place_detached(nonce, b"", &mut plain, tag)
        };
        r.map_err(|_| Drop::DecryptFailed)?;
        Ok((plain, peer))
    }

    /// Encrypts the FrameSet `wire` (as [`crate::classify::encode`] made it)
    /// for `to`, into `out`: the same header, a new SIG, the crypt frame.
    pub fn seal(&self, to: &PeerKey, wire: &[u8], out: &mut Vec<u8>) -> Result<(), Drop> {
        seal_frameset(&self.ours[0].id, &to.id, &to.shared, wire, out)
    }
}

/// Encrypts `wire`'s frames after its SIG under `shared`, sender key id
/// `from`, receiver key id `to`; the FrameSet keeps its type and digest.
pub fn seal_frameset(
    from: &str,
    to: &str,
    shared: &SalsaBox,
    wire: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Drop> {
    let nonce: [u8; NONCE_LEN] = SalsaBox::generate_nonce(&mut OsRng).into();
    seal_frameset_with_nonce(from, to, shared, &nonce, wire, out)
}

/// [`seal_frameset`] with a given nonce: for test vectors and fuzz seeds
/// only (a nonce must never be used twice with one pair of keys).
pub fn seal_frameset_with_nonce(
    from: &str,
    to: &str,
    shared: &SalsaBox,
    nonce: &[u8; NONCE_LEN],
    wire: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Drop> {
    use crate::classify::{FRAMESET_HEADER_LEN, Frame, FrameIter, FrameSetView};
    let fs = FrameSetView::new_checked(wire).map_err(|d| d.reason)?;
    let mut it = FrameIter::new(fs.frames(), FRAMESET_HEADER_LEN);
    let sig = it.next().ok_or(Drop::MissingSig)?.map_err(|d| d.reason)?;
    let Ok(Frame::Sig { kind, .. }) = Frame::parse(sig.ftype, sig.value) else {
        return Err(Drop::MissingSig);
    };
    if !is_key_id(from) || !is_key_id(to) {
        return Err(Drop::BadCrypt);
    }
    let plain = it.rest();
    let mut frames = Vec::with_capacity(
        FRAME_HEADER_LEN + 4 + from.len() + to.len() + NONCE_LEN + MAC_LEN + plain.len(),
    );
    let value_len = 4 + from.len() + to.len() + NONCE_LEN + MAC_LEN + plain.len();
    frames.extend_from_slice(&FrameType::CryptCurve25519.to_wire().to_be_bytes());
    frames.extend_from_slice(&(value_len as u32).to_be_bytes()[1..]);
    for id in [from, to] {
        frames.push((id.len() + 1) as u8);
        frames.extend_from_slice(id.as_bytes());
        frames.push(0);
    }
    frames.extend_from_slice(nonce);
    let mac_at = frames.len();
    frames.extend_from_slice(&[0; MAC_LEN]);
    let text_at = frames.len();
    frames.extend_from_slice(plain);
    let tag = shared
        .encrypt_in_place_detached(
            crypto_box::Nonce::from_slice(nonce),
            b"",
            &mut frames[text_at..],
        )
        .map_err(|_| Drop::BadCrypt)?;
    frames[mac_at..text_at].copy_from_slice(&tag);
    crate::classify::seal(fs.fstype(), &frames, kind, out);
    Ok(())
}

/// A box between one secret and one public key (for tests and for the
/// decoder, which opens with any key of a directory).
pub fn salsa_box(their_public: &[u8; KEY_LEN], my_secret: &[u8; KEY_LEN]) -> SalsaBox {
    SalsaBox::new(
        &PublicKey::from(*their_public),
        &SecretKey::from_bytes(*my_secret),
    )
}

/// Opens a crypt frame with a given box (the decoder's and the tests'
/// path; the daemon's is [`Keyring::open`]).
pub fn open_with(shared: &SalsaBox, h: &CryptHeader<'_>) -> Result<Vec<u8>, Drop> {
    let mut plain = h.ciphertext.to_vec();
    shared
        .decrypt_in_place_detached(
            crypto_box::Nonce::from_slice(h.nonce),
            b"",
            &mut plain,
            crypto_box::aead::Tag::<SalsaBox>::from_slice(h.mac),
        )
        .map_err(|_| Drop::DecryptFailed)?;
    Ok(plain)
}

/// A new random key pair: (public, secret).
pub fn generate_keypair() -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let secret = SecretKey::generate(&mut OsRng);
    (secret.public_key().to_bytes(), secret.to_bytes())
}

/// The public key of a secret key.
pub fn public_of(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    SecretKey::from_bytes(*secret).public_key().to_bytes()
}

#[cfg(test)]
mod tests;

impl crate::classify::Opener for Keyring {
    fn open_frames(&self, h: &CryptHeader<'_>) -> Result<(Vec<u8>, Arc<str>), Drop> {
        self.open(h).map(|(plain, k)| (plain, k.id.clone()))
    }
}

/// Opens FrameSets of either direction with the keys of a directory
/// (`cma decode --keys DIR`): one side's secret key (the CMA's, or a
/// nanoprobe's) and the other's public key.
pub struct DirOpener {
    files: keydir::Files,
}

impl DirOpener {
    /// Reads every key of `dir`.
    pub fn load(dir: &Path) -> Result<DirOpener, KeyDirError> {
        Ok(DirOpener {
            files: keydir::scan(dir)?,
        })
    }
}

impl crate::classify::Opener for DirOpener {
    fn open_frames(&self, h: &CryptHeader<'_>) -> Result<(Vec<u8>, Arc<str>), Drop> {
        let s = &self.files.secrets;
        let (secret, other) = match (s.get(h.receiver_key_id), s.get(h.sender_key_id)) {
            (Some(k), _) => (k, h.sender_key_id),
            (None, Some(k)) => (k, h.receiver_key_id),
            (None, None) => return Err(Drop::NotOurKey),
        };
        let public = self.files.publics.get(other).ok_or(Drop::UnknownKey)?;
        open_with(&salsa_box(public, secret), h).map(|p| (p, Arc::from(h.sender_key_id)))
    }
}

/// Fixed keys for tests, fuzzing and fuzz seeds: a keyring (the CMA's key
/// `#CMA#00000` from secret `[7; 32]`, in memory) that trusts the nanoprobe
/// `fuzz` (secret `[3; 32]`); its key id, and its box with the CMA's key.
pub fn fixture() -> (Keyring, String, SalsaBox) {
    let ring = Keyring::in_memory(&[("#CMA#00000", [7; KEY_LEN])], false);
    let public = public_of(&[3; KEY_LEN]);
    let id = nanoprobe_key_id("fuzz", &public);
    let Admission::Trusted(_) = ring.admit("fuzz", &id, &public) else {
        unreachable!("a first key is trusted");
    };
    let shared = salsa_box(&ring.sending_key().public, &[3; KEY_LEN]);
    (ring, id, shared)
}
