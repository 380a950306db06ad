//! The key directory, laid out as the nanoprobe's `crypto.d`: `<id>.pub`
//! (32 raw bytes, mode 0644) and `<id>.secret` (32 raw bytes, 0600). The
//! CMA's key ids are `#CMA#00000`, `#CMA#00001`, ...; a nanoprobe's
//! `<lower-case host>@@<MD5 hex of its public key>`. Keys refused at a
//! STARTUP wait in `refused/` for the operator (`cma keys trust HOST`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::{CMA_KEY_PREFIX, KEY_LEN};
use crate::classify::is_key_id;

const PUB: &str = ".pub";
const SECRET: &str = ".secret";
const REFUSED: &str = "refused";

/// A key directory that cannot be read or written.
#[derive(Debug)]
pub enum KeyDirError {
    /// An I/O error on a path.
    Io(PathBuf, std::io::Error),
    /// A key file of the wrong size, or a secret readable by others.
    Bad(PathBuf, String),
    /// What the operator asked cannot be done.
    Refused(String),
}

impl fmt::Display for KeyDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDirError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            KeyDirError::Bad(p, e) => write!(f, "{}: {e}", p.display()),
            KeyDirError::Refused(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for KeyDirError {}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> KeyDirError + '_ {
    move |e| KeyDirError::Io(p.to_path_buf(), e)
}

/// A nanoprobe's key id: `<lower-case host>@@<MD5 hex of the key>`.
pub fn nanoprobe_key_id(host: &str, public: &[u8; KEY_LEN]) -> String {
    format!(
        "{}@@{}",
        host.to_ascii_lowercase(),
        hex::encode(Md5::digest(public))
    )
}

/// The CMA's key id number `n`: `#CMA#00000`, ...
pub fn cma_key_id(n: u32) -> String {
    format!("{CMA_KEY_PREFIX}{n:05}")
}

/// A nanoprobe key id's (lower-case host, MD5 hex).
pub fn split_nanoprobe_key_id(id: &str) -> Option<(String, &str)> {
    let (host, sum) = id.rsplit_once("@@")?;
    (!host.is_empty() && sum.len() == 32 && sum.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (host.to_ascii_lowercase(), sum))
}

/// The path of a public key.
pub fn public_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{PUB}"))
}

/// The path of a secret key.
pub fn secret_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{SECRET}"))
}

/// Every key of a directory.
#[derive(Default)]
pub struct Files {
    /// Public keys by id.
    pub publics: BTreeMap<String, [u8; KEY_LEN]>,
    /// Secret keys by id.
    pub secrets: BTreeMap<String, [u8; KEY_LEN]>,
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], KeyDirError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    bytes.as_slice().try_into().map_err(|_| {
        KeyDirError::Bad(
            path.to_path_buf(),
            format!("{} bytes, a key is {KEY_LEN}", bytes.len()),
        )
    })
}

/// Reads every `<id>.pub` and `<id>.secret` of `dir` (a missing directory
/// is an empty one). A secret readable by group or others is refused.
pub fn scan(dir: &Path) -> Result<Files, KeyDirError> {
    let mut files = Files::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(KeyDirError::Io(dir.to_path_buf(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(id) = name.strip_suffix(PUB).filter(|id| is_key_id(id)) {
            files.publics.insert(id.to_string(), read_key(&path)?);
        } else if let Some(id) = name.strip_suffix(SECRET).filter(|id| is_key_id(id)) {
            let mode = entry.metadata().map_err(io(&path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KeyDirError::Bad(
                    path,
                    format!(
                        "mode {:o}: a secret key must not be readable by others (chmod 600)",
                        mode & 0o777
                    ),
                ));
            }
            files.secrets.insert(id.to_string(), read_key(&path)?);
        }
    }
    Ok(files)
}

/// Writes a key file atomically (temporary file, fsync, rename, fsync of
/// the directory): a crash leaves the old file or the new one.
fn write_key(dir: &Path, path: &Path, key: &[u8; KEY_LEN], mode: u32) -> Result<(), KeyDirError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(key).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Saves a trusted public key (`<id>.pub`, 0644).
pub fn save_public(dir: &Path, id: &str, key: &[u8; KEY_LEN]) -> Result<(), KeyDirError> {
    write_key(dir, &public_path(dir, id), key, 0o644)
}

/// Keeps a refused key for the operator (`refused/<id>.pub`).
pub fn save_refused(dir: &Path, id: &str, key: &[u8; KEY_LEN]) -> Result<(), KeyDirError> {
    let r = dir.join(REFUSED);
    if public_path(&r, id).exists() {
        return Ok(());
    }
    write_key(&r, &public_path(&r, id), key, 0o644)
}

/// `cma keys init`: makes the CMA's first key pair (`#CMA#00000`), or the
/// next one (a rotation spare) with `next`. Returns its id and public key.
pub fn init(dir: &Path, next: bool) -> Result<(String, [u8; KEY_LEN]), KeyDirError> {
    let files = scan(dir)?;
    let mine: Vec<&String> = files
        .secrets
        .keys()
        .filter(|id| id.starts_with(CMA_KEY_PREFIX))
        .collect();
    if !mine.is_empty() && !next {
        return Err(KeyDirError::Refused(format!(
            "{} already holds the CMA key {} (`cma keys init --next` makes a rotation spare)",
            dir.display(),
            mine[0]
        )));
    }
    let n = (0u32..)
        .find(|n| {
            !files.publics.contains_key(&cma_key_id(*n))
                && !files.secrets.contains_key(&cma_key_id(*n))
        })
        .expect("a free number");
    let id = cma_key_id(n);
    let (public, secret) = super::generate_keypair();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
    write_key(dir, &secret_path(dir, &id), &secret, 0o600)?;
    write_key(dir, &public_path(dir, &id), &public, 0o644)?;
    Ok((id, public))
}

/// One key as `cma keys list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Key id.
    pub id: String,
    /// "cma" (with its secret), "cma-public", "trusted" or "refused".
    pub role: &'static str,
    /// MD5 hex of the key (what the nanoprobe's key ids carry).
    pub md5: String,
}

/// Every key of the directory, the CMA's first.
pub fn list(dir: &Path) -> Result<Vec<Listed>, KeyDirError> {
    let files = scan(dir)?;
    let refused = scan(&dir.join(REFUSED))?;
    let md5 = |k: &[u8; KEY_LEN]| hex::encode(Md5::digest(k));
    let mut out = Vec::new();
    for (id, k) in &files.publics {
        let role = if !id.starts_with(CMA_KEY_PREFIX) {
            "trusted"
        } else if files.secrets.contains_key(id) {
            "cma"
        } else {
            "cma-public"
        };
        out.push(Listed {
            id: id.clone(),
            role,
            md5: md5(k),
        });
    }
    for (id, k) in &refused.publics {
        out.push(Listed {
            id: id.clone(),
            role: "refused",
            md5: md5(k),
        });
    }
    out.sort_by_key(|l| (l.role != "cma", l.role == "refused", l.id.clone()));
    Ok(out)
}

fn host_keys<'a>(ids: impl Iterator<Item = &'a String>, host: &str) -> Vec<String> {
    let host = host.to_ascii_lowercase();
    ids.filter(|id| split_nanoprobe_key_id(id).is_some_and(|(h, _)| h == host))
        .cloned()
        .collect()
}

/// `cma keys trust HOST`: the key refused for HOST becomes its trusted
/// key (the old one is removed). The running daemon takes it at the
/// host's next STARTUP.
pub fn trust(dir: &Path, host: &str) -> Result<String, KeyDirError> {
    let rdir = dir.join(REFUSED);
    let refused = scan(&rdir)?;
    let new = host_keys(refused.publics.keys(), host);
    let [id] = new.as_slice() else {
        return Err(KeyDirError::Refused(if new.is_empty() {
            format!("no refused key for host {host} in {}", rdir.display())
        } else {
            format!(
                "several refused keys for host {host}: {}; remove all but one from {}",
                new.join(", "),
                rdir.display()
            )
        }));
    };
    let key = refused.publics[id];
    let files = scan(dir)?;
    for old in host_keys(files.publics.keys(), host) {
        let p = public_path(dir, &old);
        std::fs::remove_file(&p).map_err(io(&p))?;
    }
    save_public(dir, id, &key)?;
    let p = public_path(&rdir, id);
    std::fs::remove_file(&p).map_err(io(&p))?;
    Ok(id.clone())
}

/// `cma keys forget HOST`: its trusted (and refused) keys are removed; its
/// next STARTUP is a first use.
pub fn forget(dir: &Path, host: &str) -> Result<Vec<String>, KeyDirError> {
    let mut gone = Vec::new();
    for d in [dir.to_path_buf(), dir.join(REFUSED)] {
        let files = scan(&d)?;
        for id in host_keys(files.publics.keys(), host) {
            let p = public_path(&d, &id);
            std::fs::remove_file(&p).map_err(io(&p))?;
            gone.push(id);
        }
    }
    if gone.is_empty() {
        return Err(KeyDirError::Refused(format!(
            "no key for host {host} in {}",
            dir.display()
        )));
    }
    Ok(gone)
}

/// A key's raw bytes by id (public), from the directory or `refused/`.
pub fn read_public(dir: &Path, id: &str) -> Result<[u8; KEY_LEN], KeyDirError> {
    if !is_key_id(id) {
        return Err(KeyDirError::Refused(format!("{id:?} is not a key id")));
    }
    let p = public_path(dir, id);
    if p.exists() {
        return read_key(&p);
    }
    read_key(&public_path(&dir.join(REFUSED), id))
}
