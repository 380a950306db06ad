//! Helpers of the tests that run real nanoprobes (tests/nanoprobe.rs,
//! tests/netlab.rs): finding or building the probe, running commands,
//! saying in one line why a test was skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cma::store::db_path;
use cma::store::{EventView, Store};

/// Says why the test did nothing, on the real stderr: libtest captures
/// `eprintln!` of a passing test, and this line must be seen.
pub fn skip(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{what} skipped: {why}");
}

/// The nanoprobe binary: `NANOPROBE`, or built from ../shared/nanoprobe.
pub fn nanoprobe() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("NANOPROBE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NANOPROBE={} is no file", p.display()))
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = root.join("../shared/nanoprobe/build.sh");
    if !build.is_file() {
        return Err("no ../shared/nanoprobe/build.sh beside the project and no NANOPROBE".into());
    }
    let out = Command::new("bash")
        .arg(&build)
        .arg(root.join("target/nanoprobe"))
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("build.sh: {e}"))?;
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    if !out.status.success() || !Path::new(&path).is_file() {
        return Err(format!("build.sh failed ({})", out.status));
    }
    Ok(PathBuf::from(path))
}

/// Runs a command; its stderr is the error.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Are we root (namespaces need it)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// The events in the CMA's database under `data` (none while it cannot be
/// read).
pub fn events(data: &Path) -> Vec<EventView> {
    Store::open_read_only(&db_path(data))
        .and_then(|s| s.events(0, 1_000_000))
        .unwrap_or_default()
}

/// `cma rings --json` over the CMA's database under `data`: (group, host
/// names in ring order).
pub fn rings(data: &Path) -> Vec<(String, Vec<String>)> {
    let out = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["rings", "--json", "--data-dir"])
        .arg(data)
        .output()
        .expect("cma rings");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|j| {
            let hosts = j["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x["host"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (j["group"].as_str().unwrap_or("").to_string(), hosts)
        })
        .collect()
}
