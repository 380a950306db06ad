//! The whole-system benchmarks run end to end (small sizes; their figures
//! are not judged here: shared/BENCH.md).

use cma::bench::ack::{AckBenchConfig, FloodKind, render, run, to_json};
use cma::bench::joins;
use cma::bench::storm;

/// `cma bench ack`: every report of every agent is ACKed, the references
/// are measured in the same run, and the table and JSON say so.
#[test]
fn bench_ack_measures_every_report_and_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AckBenchConfig {
        reports: 30,
        agents: vec![1, 3],
        dir: dir.path().to_path_buf(),
        flood_rate: 2000,
        flood_kinds: vec![FloodKind::Bombs, FloodKind::Sequenced],
        interleave: false,
    };
    let r = run(&cfg).expect("the bench runs");
    assert_eq!(
        r.runs
            .iter()
            .map(|(a, d)| (*a, d.count))
            .collect::<Vec<_>>(),
        vec![(1, 30), (3, 90)]
    );
    for d in [&r.msync, &r.fdatasync, &r.msync_large_folios] {
        assert_eq!(d.count, 100);
        assert!(d.p50 > 0 && d.p50 <= d.p99 && d.p99 <= d.max);
    }
    // And again under each flood: every report still ACKed.
    assert_eq!(
        r.flooded
            .iter()
            .map(|(k, a, d, _)| (*k, *a, d.count))
            .collect::<Vec<_>>(),
        vec![
            (FloodKind::Bombs, 1, 30),
            (FloodKind::Sequenced, 1, 30),
            (FloodKind::Bombs, 3, 90),
            (FloodKind::Sequenced, 3, 90)
        ]
    );
    assert!(r.flooded.iter().all(|(_, _, _, t)| t.sent > 0));
    // A sequenced flood is logged (beyond the reports and its STARTUP).
    for (k, _, d, t) in &r.flooded {
        if *k == FloodKind::Sequenced {
            assert!(t.logged > d.count + 1 && t.syncs > 0, "{t:?}");
        }
    }
    let table = render(&cfg, &r);
    assert!(table.contains("one-page msync") && table.contains("3 agent(s)"));
    let j = to_json(&cfg, &r);
    assert_eq!(j["runs"][1]["count"], 90);
    // Nothing is left behind in the measured directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `cma bench joins`: a small storm against `cma run` in its own process,
/// every agent placed, then the restart; the figures are reported.
#[test]
fn bench_joins_places_every_agent_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = joins::JoinsBenchConfig {
        nodes: 60,
        switches: 3,
        dir: dir.path().to_path_buf(),
        timeout_s: 60,
        exe: Some(env!("CARGO_BIN_EXE_cma").into()),
    };
    let r = joins::run(&cfg).expect("the bench runs");
    assert_eq!(r.nodes, 60);
    assert!(r.netconfig_bytes > 1000, "{} B", r.netconfig_bytes);
    assert!(r.storm.seconds > 0.0 && r.restart.seconds > 0.0);
    assert!(r.storm.rss_kib > 0 && r.idle_rss_kib > 0);
    assert!(joins::render(&r).contains("60 agents"));
    assert_eq!(joins::to_json(&r)["nodes"], 60);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `cma bench storm`: forged STARTUPs (never answering) against `cma run`
/// in its own process: each draws its SETCONFIG `join_give_up_after`
/// times (4) and no more, every registration is forgotten, and a real
/// agent joins afterwards.
#[test]
fn bench_storm_forgets_every_forged_registration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = storm::StormBenchConfig {
        startups: 200,
        networks: 4,
        seconds: 0.5,
        sample: 16,
        dir: dir.path().to_path_buf(),
        timeout_s: 60,
        exe: Some(env!("CARGO_BIN_EXE_cma").into()),
    };
    let r = storm::run(&cfg).expect("the bench runs");
    assert_eq!(r.sent, 200);
    assert!(r.peak_held > 0 && r.peak_held <= 200, "{}", r.peak_held);
    assert_eq!(r.drawn_max, 4, "{r:?}");
    assert!(r.real_joined);
    assert!(storm::render(&r).contains("200 forged STARTUPs"));
    assert_eq!(storm::to_json(&r)["drawn_datagrams_max"], 4);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `--rounds`: each flooded p99 is judged against its own round's
/// unflooded p99, and the median over rounds is what is reported.
#[test]
fn flood_ratios_are_judged_per_round_by_their_median() {
    use cma::bench::ack::{AckBenchResult, Dist, flood_medians, render_rounds};
    let d = |p99| Dist {
        count: 1,
        p50: 1,
        p90: 1,
        p99,
        p999: p99,
        max: p99,
    };
    let round = |calm, flooded, bare_calm, bare_flooded| AckBenchResult {
        msync: d(1),
        fdatasync: d(1),
        msync_large_folios: d(1),
        runs: vec![(1, d(calm))],
        flooded: vec![(FloodKind::Bombs, 1, d(flooded), Default::default())],
        bare: vec![
            (None, d(bare_calm), Default::default()),
            (Some(FloodKind::Bombs), d(bare_flooded), Default::default()),
        ],
    };
    // Round 2 had a noisy unflooded run (its ratio alone would pass).
    let rounds = [
        round(100, 300, 100, 100),
        round(1000, 400, 100, 150),
        round(100, 250, 100, 120),
    ];
    let m = flood_medians(&rounds);
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].agents, m[0].median), (Some(1), 2.5));
    assert_eq!(m[0].ratios, vec![0.4, 2.5, 3.0]);
    assert_eq!((m[1].agents, m[1].median), (None, 1.2));
    let t = render_rounds(&rounds);
    assert!(
        t.contains("bombs flood: x2.5 (x0.4 x2.5 x3.0): goal <= 2x NOT met"),
        "{t}"
    );
    // Interleaved: each flooded run is judged against its own paused
    // phase, not the separate unflooded run.
    let paused = |calm, flooded, paused| {
        let mut r = round(calm, flooded, 100, 100);
        r.flooded[0].3.calm = Some(d(paused));
        r
    };
    let rounds = [paused(100, 300, 200), paused(100, 300, 100)];
    let m = flood_medians(&rounds);
    assert_eq!(m[0].ratios, vec![1.5, 3.0]);
    assert!(render_rounds(&rounds).contains("with the flood paused in the same run"));
}

/// `--interleave`: the flood is switched on and off within one run; the
/// reports sent in each phase are measured apart, and every one is ACKed.
#[test]
fn bench_ack_interleaved_measures_both_phases_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AckBenchConfig {
        reports: 600,
        agents: vec![1],
        dir: dir.path().to_path_buf(),
        flood_rate: 2000,
        flood_kinds: vec![FloodKind::Sequenced],
        interleave: true,
    };
    let r = run(&cfg).expect("the bench runs");
    let (_, _, on, t) = &r.flooded[0];
    let paused = t.calm.expect("the paused phase is measured");
    // Each phase got reports (600 at ~1.3 ms span several 250 ms phases);
    // those sent just after a switch belong to neither.
    assert!(on.count > 0 && paused.count > 0, "{on:?} {paused:?}");
    assert!(on.count + paused.count <= 600);
    // The flood ran while on, and was logged.
    assert!(t.sent > 0 && t.logged > 650, "{t:?}");
    let bare = r.bare.iter().find(|b| b.0.is_some()).unwrap();
    assert!(bare.2.calm.is_some_and(|c| c.count > 0) && bare.1.count > 0);
    let table = render(&cfg, &r);
    assert!(table.contains("sequenced flood paused") && table.contains("with it paused, same run"));
    assert_eq!(
        to_json(&cfg, &r)["flooded"][0]["paused"]["count"],
        paused.count
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
