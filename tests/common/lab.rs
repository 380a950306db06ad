//! A network namespace with `cma run` and real nanoprobes in it, each
//! under its own host name (tests/nanoprobe.rs, tests/nanoprobe_keys.rs).
//! Everything is killed and the namespace removed on drop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cma::store::db_path;
use cma::store::{EventView, Store};

use super::run;

/// A nanoprobe the lab started.
pub struct Probe {
    /// Its host name.
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
}

/// A network namespace with the CMA and probes in it; everything is killed
/// and the namespace removed on drop, even when an assertion fails.
pub struct Lab {
    /// The network namespace's name.
    pub ns: String,
    /// Scratch: the CMA's config, data and log, the probes' logs.
    pub dir: tempfile::TempDir,
    nanoprobe: PathBuf,
    cma: Option<Child>,
    /// The probes, in start order.
    pub probes: Vec<Probe>,
}

impl Lab {
    /// A namespace `cma-TAG-PID` with the CMA configured by `cma_toml`.
    pub fn new(nanoprobe: PathBuf, tag: &str, cma_toml: &str) -> Result<Lab, String> {
        let ns = format!("cma-{tag}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        let lab = Lab {
            ns,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            nanoprobe,
            cma: None,
            probes: Vec::new(),
        };
        lab.ip(&["link", "set", "lo", "up"])?;
        // Two subnets on loopback: two groups of probes.
        for a in ["127.79.0.1", "127.79.0.2", "127.79.0.3", "127.79.0.4"] {
            lab.ip(&["addr", "add", &format!("{a}/24"), "dev", "lo"])?;
        }
        for a in ["127.79.0.9", "127.79.1.1", "127.79.1.2"] {
            lab.ip(&["addr", "add", &format!("{a}/24"), "dev", "lo"])?;
        }
        // A dozen interfaces: every probe's netconfig (its STARTUP) grows
        // past 2 KB, as on a real host with many NICs.
        for i in 0..6 {
            let (a, b) = (format!("va{i}"), format!("vb{i}"));
            lab.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            lab.ip(&["link", "set", &a, "up"])?;
            lab.ip(&["link", "set", &b, "up"])?;
        }
        std::fs::write(lab.dir.path().join("cma.toml"), cma_toml).map_err(|e| e.to_string())?;
        Ok(lab)
    }

    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").arg("-n").arg(&self.ns).args(args))
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn start_cma(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cma.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_cma"), "run"])
            .arg("--config")
            .arg(self.dir.path().join("cma.toml"))
            .arg("--data-dir")
            .arg(self.data())
            .args(["--listen", "127.0.0.1:1984"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cma run starts");
        self.cma = Some(child);
    }

    pub fn kill_cma(&mut self) {
        if let Some(mut c) = self.cma.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a nanoprobe named `name` bound to `addr`:1984, in its own
    /// UTS namespace; returns its index.
    pub fn start_probe(&mut self, name: &str, addr: &str) -> usize {
        let i = self.probes.len();
        let log = self.dir.path().join(format!("probe{i}-{name}.log"));
        let pid = self.dir.path().join(format!("probe{i}.pid"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "unshare", "--uts", "--"])
            .args(["sh", "-c", "hostname \"$1\" && shift && exec \"$@\"", "sh"])
            .arg(name)
            .arg(&self.nanoprobe)
            .args(["-f", "-d", "1", "-c", "127.0.0.1:1984"])
            .args(["-b", &format!("{addr}:1984")])
            .arg("-p")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nanoprobe starts");
        self.probes.push(Probe {
            name: name.to_string(),
            child,
            log,
        });
        i
    }

    pub fn probe(&self, name: &str) -> usize {
        self.probes
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no probe {name}"))
    }

    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.probes[i].child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal a probe");
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.probes[i].log).unwrap_or_default()
    }

    pub fn status(&self) -> HashMap<String, (String, String)> {
        Store::open_read_only(&db_path(&self.data()))
            .and_then(|s| s.nodes())
            .map(|v| {
                v.into_iter()
                    .map(|n| (n.hostname, (n.status, n.addr)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn events(&self) -> Vec<EventView> {
        super::events(&self.data())
    }

    pub fn rings(&self) -> Vec<(String, Vec<String>)> {
        super::rings(&self.data())
    }

    pub fn top(&self) -> Vec<String> {
        self.rings()
            .into_iter()
            .find(|(g, _)| g == "top")
            .map(|r| r.1)
            .unwrap_or_default()
    }

    pub fn all_up(&self, names: &[&str]) -> bool {
        let s = self.status();
        names.iter().all(|n| s.get(*n).is_some_and(|x| x.0 == "up"))
    }

    /// Polls `what` until it holds or the deadline passes.
    pub fn wait(&self, what: &str, limit: Duration, mut done: impl FnMut(&Lab) -> bool) {
        let t0 = Instant::now();
        while !done(self) {
            assert!(
                t0.elapsed() < limit,
                "timed out waiting for {what}\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What a failure shows: the CMA's log tail and node table.
    pub fn report(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("cma.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "nodes: {:?}\nrings: {:?}\ncma log (last lines first):\n{}",
            self.status(),
            self.rings(),
            tail.join("\n")
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_cma();
        for p in &mut self.probes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

pub fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}
