//! `cma fleet`: a fault script (kills, restarts, shutdowns, partitions at
//! given times) played on a [`Fleet`], a progress line, and a final report
//! with the CMA's view read from its database when one is at hand.

use super::*;

/// A scripted fault: what, how many (or which switch), when (fleet ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill `count` agents.
    Kill {
        /// How many.
        count: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
    /// Restart `count` agents (new incarnations).
    Restart {
        /// How many.
        count: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
    /// Shut `count` agents down cleanly.
    Shutdown {
        /// How many.
        count: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
    /// Cut switch `switch` off.
    Partition {
        /// Which switch.
        switch: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
}

impl Fault {
    /// When it strikes.
    pub fn at_ms(&self) -> u64 {
        match *self {
            Fault::Kill { at_ms, .. }
            | Fault::Restart { at_ms, .. }
            | Fault::Shutdown { at_ms, .. }
            | Fault::Partition { at_ms, .. } => at_ms,
        }
    }
}

/// Parses `N@T` (T in seconds, or with an `ms`/`s`/`m` suffix).
pub fn parse_at(s: &str) -> Result<(usize, u64), String> {
    let (n, t) = s
        .split_once('@')
        .ok_or_else(|| format!("'{s}': expected COUNT@TIME, e.g. 10@60s"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': '{n}' is not a count"))?;
    let t = t.trim();
    let (num, mult) = if let Some(v) = t.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1000.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60_000.0)
    } else {
        (t, 1000.0)
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("'{s}': '{t}' is not a time"))?;
    Ok((n, (v * mult) as u64))
}

/// `cma fleet`'s options beyond the fleet's shape.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The fault script.
    pub faults: Vec<Fault>,
    /// Stop after this long (None: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// The daemon's data directory, to read its view of the fleet.
    pub data_dir: Option<PathBuf>,
    /// Print the final report as JSON.
    pub json: bool,
    /// Progress line every this often (None: none).
    pub progress: Option<Duration>,
    /// Agents shut down cleanly at the end (else they just stop).
    pub leave: bool,
}

/// Detection of one injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    /// "kill", "restart", "shutdown", "partition".
    pub kind: &'static str,
    /// Host (or switch) it struck.
    pub target: String,
    /// Fleet time, ms.
    pub at_ms: u64,
    /// When the CMA's database showed the expected verdict, ms after the
    /// fault (dead for a kill, left for a shutdown, a switch fault for a
    /// partition, up again for a restart); None: not seen.
    pub seen_after_ms: Option<u64>,
}

/// The final report.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    /// Agents.
    pub nodes: usize,
    /// Seconds run.
    pub seconds: f64,
    /// Agents joined at the end.
    pub joined: usize,
    /// ms until every agent was joined and (with a database) in a ring.
    pub all_in_rings_ms: Option<u64>,
    /// Per injected fault.
    pub faults: Vec<FaultReport>,
    /// Nodes the CMA declared dead that were neither killed nor cut off.
    pub false_dead: Vec<String>,
    /// Switch-fault verdicts seen.
    pub switch_faults: u64,
    /// Datagrams between agents and the CMA (both ways) per node per minute.
    pub cma_packets_per_node_minute: f64,
    /// Traffic counters.
    pub traffic: FleetTraffic,
}

/// The CMA's view, read from its database.
#[derive(Default)]
struct CmaView {
    status: HashMap<String, String>,
    in_ring: usize,
    switch_faults: u64,
    events_after: u64,
}

impl CmaView {
    fn refresh(&mut self, store: &crate::store::Store) {
        if let Ok(nodes) = store.nodes() {
            self.in_ring = nodes
                .iter()
                .filter(|n| n.status == "up" && n.group.is_some())
                .count();
            self.status = nodes.into_iter().map(|n| (n.hostname, n.status)).collect();
        }
        while let Ok(ev) = store.events(self.events_after, 10_000) {
            let Some(last) = ev.last() else { break };
            self.events_after = last.lsn as u64;
            self.switch_faults += ev.iter().filter(|e| e.kind == "switch_fault").count() as u64;
            if ev.len() < 10_000 {
                break;
            }
        }
    }

    fn count(&self, status: &str) -> usize {
        self.status.values().filter(|s| *s == status).count()
    }
}

/// Runs `cma fleet`: builds the fleet, plays the fault script, prints
/// progress to stderr, and returns the report.
///
/// Kept whole: the harness's timeline (start, join, fault script,
/// settle, report) read in order.
pub fn run(cfg: FleetConfig, opts: RunOptions, stop: Arc<AtomicBool>) -> io::Result<FleetReport> {
    let mut fleet = Fleet::new(cfg)?;
    let n = fleet.len();
    let mut faults = opts.faults.clone();
    faults.sort_by_key(|f| f.at_ms());
    let mut next_fault = 0;
    // Victims: distinct agents, spread over the fleet, never two at once
    // from the same place so that each death has a live monitor.
    let mut victims = (0..n).map(|k| (k * 7919 + n / 3) % n.max(1));
    let mut used = vec![false; n];
    let mut pick = |used: &mut Vec<bool>, fleet: &Fleet| -> Option<usize> {
        for v in victims.by_ref() {
            if !used[v] && fleet.fate(v) == Fate::Alive && !fleet.is_partitioned(fleet.switch_of(v))
            {
                used[v] = true;
                return Some(v);
            }
        }
        None
    };
    let mut reports: Vec<(FaultReport, Option<usize>)> = Vec::new();
    let db = opts.data_dir.as_ref().map(|d| crate::store::db_path(d));
    let mut store: Option<crate::store::Store> = None;
    let mut view = CmaView::default();
    let mut last_view = None::<Instant>;
    let mut last_progress = Instant::now();
    let mut all_in_rings_ms = None;
    let mut baseline_switch_faults = None;
    let begin = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| begin.elapsed() >= d) {
            break;
        }
        fleet.step(Duration::from_millis(50))?;
        let now = fleet.now_ms();
        while next_fault < faults.len() && faults[next_fault].at_ms() <= now {
            let f = faults[next_fault];
            next_fault += 1;
            match f {
                Fault::Kill { count, .. }
                | Fault::Restart { count, .. }
                | Fault::Shutdown { count, .. } => {
                    for _ in 0..count {
                        let Some(v) = pick(&mut used, &fleet) else {
                            break;
                        };
                        let kind = match f {
                            Fault::Kill { .. } => {
                                fleet.kill(v);
                                "kill"
                            }
                            Fault::Restart { .. } => {
                                fleet.restart(v)?;
                                "restart"
                            }
                            _ => {
                                fleet.shutdown(v);
                                "shutdown"
                            }
                        };
                        reports.push((
                            FaultReport {
                                kind,
                                target: fleet.hostname(v),
                                at_ms: now,
                                seen_after_ms: None,
                            },
                            Some(v),
                        ));
                    }
                }
                Fault::Partition { switch, .. } => {
                    fleet.partition(switch, true);
                    reports.push((
                        FaultReport {
                            kind: "partition",
                            target: format!("fleet-switch-{switch}"),
                            at_ms: now,
                            seen_after_ms: None,
                        },
                        None,
                    ));
                }
            }
        }
        // The CMA's view, four times a second.
        if let Some(path) = &db
            && last_view.is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
        {
            last_view = Some(Instant::now());
            if store.is_none() && path.exists() {
                store = crate::store::Store::open_read_only(path).ok();
            }
            if let Some(s) = &store {
                view.refresh(s);
                let base = *baseline_switch_faults.get_or_insert(view.switch_faults);
                for (r, v) in reports
                    .iter_mut()
                    .filter(|(r, _)| r.seen_after_ms.is_none())
                {
                    let st = view.status.get(&r.target).map(String::as_str);
                    let seen = match r.kind {
                        "kill" => st == Some("dead"),
                        "shutdown" => st == Some("left"),
                        "restart" => {
                            st == Some("up")
                                && v.and_then(|i| fleet.agent(i))
                                    .is_some_and(|a| a.phase() == Phase::Joined)
                        }
                        _ => view.switch_faults > base,
                    };
                    if seen {
                        r.seen_after_ms = Some(now.saturating_sub(r.at_ms));
                    }
                }
            }
        }
        if all_in_rings_ms.is_none() {
            let joined = fleet.joined();
            let in_rings = if store.is_some() {
                view.in_ring
            } else {
                joined
            };
            if joined == n && in_rings >= n {
                all_in_rings_ms = Some(now);
            }
        }
        if let Some(every) = opts.progress
            && last_progress.elapsed() >= every
        {
            last_progress = Instant::now();
            let t = fleet.traffic();
            let mut line = format!(
                "t={:>6.1}s joined {}/{n}",
                now as f64 / 1000.0,
                fleet.joined()
            );
            if store.is_some() {
                line += &format!(
                    "  in rings {}  suspects {}  dead {}  left {}  unreachable {}  switch faults {}",
                    view.in_ring,
                    view.count("suspect") + view.count("disputed"),
                    view.count("dead"),
                    view.count("left"),
                    view.count("unreachable"),
                    view.switch_faults - baseline_switch_faults.unwrap_or(0),
                );
            }
            line += &format!("  cma pkts {}", t.to_cma + t.from_cma);
            eprintln!("{line}");
        }
    }
    let joined = fleet.joined();
    if opts.leave {
        fleet.shutdown_all();
        let wait = Instant::now() + Duration::from_secs(10);
        while !fleet.all_done() && Instant::now() < wait {
            fleet.step(Duration::from_millis(50))?;
        }
    }
    let seconds = begin.elapsed().as_secs_f64();
    let t = fleet.traffic();
    let killed_or_cut = |host: &str| {
        reports
            .iter()
            .any(|(r, _)| r.target == host && r.kind == "kill")
            || (0..n).any(|i| fleet.hostname(i) == host && fleet.is_partitioned(fleet.switch_of(i)))
    };
    let false_dead = view
        .status
        .iter()
        .filter(|(h, s)| *s == "dead" && !killed_or_cut(h))
        .map(|(h, _)| h.clone())
        .collect();
    Ok(FleetReport {
        nodes: n,
        seconds,
        joined,
        all_in_rings_ms,
        faults: reports.into_iter().map(|(r, _)| r).collect(),
        false_dead,
        switch_faults: view.switch_faults - baseline_switch_faults.unwrap_or(0),
        cma_packets_per_node_minute: (t.to_cma + t.from_cma) as f64
            / n.max(1) as f64
            / (seconds / 60.0).max(1e-9),
        traffic: t,
    })
}

/// The report as people read it.
pub fn print_report(r: &FleetReport, out: &mut impl io::Write) -> io::Result<()> {
    writeln!(out, "fleet: {} agents, {:.1} s", r.nodes, r.seconds)?;
    writeln!(out, "  joined at the end: {}", r.joined)?;
    match r.all_in_rings_ms {
        Some(ms) => writeln!(out, "  all in rings after: {:.1} s", ms as f64 / 1000.0)?,
        None => writeln!(out, "  all in rings: never")?,
    }
    for f in &r.faults {
        let seen = f
            .seen_after_ms
            .map(|ms| format!("seen after {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "not seen".into());
        writeln!(
            out,
            "  {:<9} {:<20} at {:>7.1} s  {seen}",
            f.kind,
            f.target,
            f.at_ms as f64 / 1000.0
        )?;
    }
    writeln!(out, "  false dead: {}", r.false_dead.len())?;
    writeln!(out, "  switch-fault verdicts: {}", r.switch_faults)?;
    writeln!(
        out,
        "  CMA packets per node per minute: {:.1}",
        r.cma_packets_per_node_minute
    )?;
    writeln!(
        out,
        "  traffic: to CMA {}, from CMA {}, heartbeats {}, dropped {}, send errors {}",
        r.traffic.to_cma,
        r.traffic.from_cma,
        r.traffic.heartbeats,
        r.traffic.dropped,
        r.traffic.send_errors
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_times_parse() {
        assert_eq!(parse_at("10@60"), Ok((10, 60_000)));
        assert_eq!(parse_at("2@1.5s"), Ok((2, 1500)));
        assert_eq!(parse_at("1@250ms"), Ok((1, 250)));
        assert_eq!(parse_at("3@2m"), Ok((3, 120_000)));
        assert!(parse_at("10").is_err());
        assert!(parse_at("x@1").is_err());
        assert!(parse_at("1@-1").is_err());
        assert!(parse_at("1@nan").is_err());
    }
}
