//! `cma keys`: the key directory from the command line (make the CMA's key
//! pair, list, show, trust a refused key, forget a host).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::keydir;

/// What `cma keys` does.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make the CMA's key pair (#CMA#00000; with --next, a rotation spare).
    Init {
        /// Make the next key (#CMA#00001, ...) beside the existing one.
        #[arg(long)]
        next: bool,
    },
    /// Every key: the CMA's, trusted nanoprobes', refused ones.
    List,
    /// Where a key's file is, and its MD5 (default: the CMA's sending key).
    /// Copy `#CMA#00000.pub` into each nanoprobe's crypto.d.
    Show {
        /// Key id.
        id: Option<String>,
    },
    /// Trust the key refused for HOST (it replaces the old one).
    Trust {
        /// Host name.
        host: String,
    },
    /// Forget HOST's keys: its next STARTUP is a first use.
    Forget {
        /// Host name.
        host: String,
    },
}

/// Runs `cma keys`: the directory is `dir`, or the `[auth] key_dir` of
/// `config`, or the default configuration's.
pub fn run(dir: Option<PathBuf>, config: Option<PathBuf>, command: KeysCommand) -> ExitCode {
    let dir = match (dir, config) {
        (Some(d), _) => d,
        (None, Some(c)) => match crate::config::Config::load(&c) {
            Ok(c) => c.key_dir(),
            Err(e) => {
                eprintln!("cma keys: {}", e.0);
                return ExitCode::from(2);
            }
        },
        (None, None) => crate::config::Config::default().key_dir(),
    };
    let result = match command {
        KeysCommand::Init { next } => keydir::init(&dir, next).map(|(id, public)| {
            println!("made {id} in {}", dir.display());
            println!(
                "public key {} (md5 {}): copy it into each nanoprobe's crypto.d",
                keydir::public_path(&dir, &id).display(),
                hex::encode(md5_of(&public))
            );
        }),
        KeysCommand::List => keydir::list(&dir).map(|l| {
            for k in l {
                println!("{:<10} {}  {}", k.role, k.md5, k.id);
            }
        }),
        KeysCommand::Show { id } => {
            let id = match id {
                Some(i) => Ok(i),
                None => keydir::list(&dir).and_then(|l| {
                    l.into_iter()
                        .find(|k| k.role == "cma")
                        .map(|k| k.id)
                        .ok_or_else(|| {
                            keydir::KeyDirError::Refused(format!(
                                "no CMA key in {} (`cma keys init`)",
                                dir.display()
                            ))
                        })
                }),
            };
            id.and_then(|id| {
                keydir::read_public(&dir, &id).map(|k| {
                    println!("{id}");
                    println!("  file   {}", keydir::public_path(&dir, &id).display());
                    println!("  md5    {}", hex::encode(md5_of(&k)));
                    println!("  key    {}", hex::encode(k));
                })
            })
        }
        KeysCommand::Trust { host } => keydir::trust(&dir, &host).map(|id| {
            println!("{host} is trusted with {id} (taken at its next STARTUP)");
        }),
        KeysCommand::Forget { host } => keydir::forget(&dir, &host).map(|ids| {
            println!(
                "forgot {}: {host}'s next key is a first use",
                ids.join(", ")
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cma keys: {e}");
            ExitCode::FAILURE
        }
    }
}

fn md5_of(k: &[u8; 32]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(k).to_vec()
}
