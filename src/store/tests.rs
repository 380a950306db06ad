//! The store's tests: effects applied once, checkpoints, views.

use super::*;
use crate::decide::decider::NodeRow;
use std::net::SocketAddr;

fn row(id: u32, health: Health) -> Effect {
    Effect::Row(Box::new(NodeRow {
        id,
        hostname: format!("h{id}"),
        addr: SocketAddr::from(([10, 0, 0, id as u8], 1984)),
        incarnation: 1,
        group: None,
        health,
        switch: None,
        state: None,
        drift: 0,
        refused: None,
        degraded: None,
        conflict: None,
        unconfirmed: false,
        gave_up: false,
    }))
}

#[test]
fn effects_apply_once_and_checkpoints_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.applied_lsn().unwrap(), 0);
    assert!(s.checkpoint().unwrap().is_none());
    let batch = vec![
        Applied {
            lsn: 1,
            time_ms: 10,
            wall_ms: None,
            effects: vec![row(0, Health::Up), Effect::Notice(Notice::Joined(0))],
        },
        Applied {
            lsn: 2,
            time_ms: 20,
            // 2026-12-02T00:00:00.000Z
            wall_ms: Some(1_796_169_600_000),
            effects: vec![Effect::Notice(Notice::Left(0)), row(0, Health::Left)],
        },
    ];
    assert_eq!(s.apply(&batch).unwrap(), 2);
    // Again (a replay after a crash): nothing doubles.
    assert_eq!(s.apply(&batch).unwrap(), 2);
    s.write_checkpoint(2, b"state").unwrap();
    drop(s);
    let r = Store::open_read_only(&path).unwrap();
    assert_eq!(r.checkpoint().unwrap(), Some((2, b"state".to_vec())));
    let nodes = r.nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].status, "left");
    let ev = r.events(0, 100).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["joined", "left"]
    );
    assert_eq!(ev[0].hostname.as_deref(), Some("h0"));
    assert_eq!((ev[0].wall_ms, ev[0].utc.as_deref()), (None, None));
    assert_eq!(ev[1].utc.as_deref(), Some("2026-12-02T00:00:00.000Z"));
    assert_eq!(
        nodes[0].updated_utc.as_deref(),
        Some("2026-12-02T00:00:00.000Z")
    );
    assert_eq!(r.wall_offset_ms().unwrap(), Some(1_796_169_600_000 - 20));
    assert_eq!(r.events(1, 100).unwrap().len(), 1);
    assert_eq!(r.status_counts().unwrap(), vec![("left".to_string(), 1)]);
}

#[test]
fn rings_are_walked_from_the_rows_of_every_change() {
    use crate::decide::topology::{GroupKey, RingLinks};
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join(DB_FILE)).unwrap();
    let ring = |node, links, top| Effect::Ring {
        node,
        links: Some(Box::new(RingLinks {
            group: GroupKey::Switch("sw".into()),
            links,
            top,
        })),
    };
    // A ring 0 -> 2 -> 1, 0 in the top ring alone; then 2 leaves.
    s.apply(&[Applied {
        lsn: 1,
        time_ms: 1,
        wall_ms: None,
        effects: vec![
            row(0, Health::Up),
            row(1, Health::Up),
            row(2, Health::Up),
            ring(0, (1, 2), Some((0, 0))),
            ring(2, (0, 1), None),
            ring(1, (2, 0), None),
        ],
    }])
    .unwrap();
    let v = s.rings().unwrap().unwrap();
    let hosts =
        |i: usize| -> Vec<String> { v.rings[i].members.iter().map(|m| m.0.clone()).collect() };
    assert_eq!(v.rings.len(), 2);
    assert_eq!(v.rings[0].group, "switch sw");
    assert_eq!(hosts(0), ["h0", "h2", "h1"]);
    assert_eq!(
        (v.rings[1].group.as_str(), hosts(1)),
        ("top", vec!["h0".to_string()])
    );
    s.apply(&[Applied {
        lsn: 2,
        time_ms: 2,
        wall_ms: None,
        effects: vec![
            Effect::Ring {
                node: 2,
                links: None,
            },
            ring(0, (1, 1), Some((0, 0))),
            ring(1, (0, 0), None),
        ],
    }])
    .unwrap();
    let v = s.rings().unwrap().unwrap();
    assert_eq!(v.as_of_lsn, 2);
    assert_eq!(v.rings[0].members.len(), 2);
}

#[test]
fn an_older_file_gains_the_wall_clock_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE events (lsn INTEGER NOT NULL, seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,
             kind TEXT NOT NULL, node INTEGER, detail TEXT NOT NULL, PRIMARY KEY (lsn, seq));",
        )
        .unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    s.apply(&[Applied {
        lsn: 1,
        time_ms: 1,
        wall_ms: Some(5),
        effects: vec![Effect::Notice(Notice::Joined(0))],
    }])
    .unwrap();
    assert_eq!(s.events(0, 10).unwrap()[0].wall_ms, Some(5));
}

#[test]
fn a_missing_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open_read_only(&dir.path().join("nope.sqlite"))
        .err()
        .unwrap();
    assert!(e.0.contains("cma run"), "{e}");
}

fn discovery_rows(path: &Path) -> Vec<(i64, String, i64, String)> {
    let c = Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT node, name, lsn, json FROM discovery ORDER BY node, name")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn discovery_is_kept_latest_per_node_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut s = Store::open(&path).unwrap();
    let disc = |lsn: u64, node: u32, json: &str| Applied {
        lsn,
        time_ms: lsn,
        wall_ms: None,
        effects: vec![Effect::Discovery {
            node,
            json: json.to_string(),
        }],
    };
    let os1 = r#"{"discovertype":"os","instance":"os","data":{"v":1}}"#;
    let os2 = r#"{"discovertype":"os","instance":"os","data":{"v":2}}"#;
    let net = r#"{"discovertype":"netconfig","data":{}}"#;
    // A node sending the same kind of discovery a thousand times is kept
    // once: the store's size does not grow with how often a node sends.
    let mut batch: Vec<Applied> = (1..=1000).map(|i| disc(i, 0, os1)).collect();
    batch.push(disc(1001, 0, os2));
    batch.push(disc(1002, 0, net));
    batch.push(disc(1003, 0, "not json"));
    batch.push(disc(1004, 1, os1));
    s.apply(&batch).unwrap();
    assert_eq!(
        discovery_rows(&path),
        vec![
            (0, String::new(), 1003, "not json".to_string()),
            (0, "netconfig".to_string(), 1002, net.to_string()),
            (0, "os".to_string(), 1001, os2.to_string()),
            (1, "os".to_string(), 1004, os1.to_string()),
        ]
    );
}

#[test]
fn an_older_files_discovery_history_becomes_the_latest_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            r#"CREATE TABLE discovery (node INTEGER NOT NULL, lsn INTEGER NOT NULL,
                   json TEXT NOT NULL, PRIMARY KEY (node, lsn));
               INSERT INTO discovery VALUES (0, 5, '{"instance":"os","v":2}');
               INSERT INTO discovery VALUES (0, 3, '{"instance":"os","v":1}');
               INSERT INTO discovery VALUES (0, 4, '{"discovertype":"netconfig"}');
               INSERT INTO discovery VALUES (0, 6, 'junk');
               INSERT INTO discovery VALUES (2, 1, '{"instance":7}');"#,
        )
        .unwrap();
    }
    drop(Store::open(&path).unwrap());
    assert_eq!(
        discovery_rows(&path),
        vec![
            (0, String::new(), 6, "junk".to_string()),
            (
                0,
                "netconfig".to_string(),
                4,
                r#"{"discovertype":"netconfig"}"#.to_string()
            ),
            (
                0,
                "os".to_string(),
                5,
                r#"{"instance":"os","v":2}"#.to_string()
            ),
            (2, String::new(), 1, r#"{"instance":7}"#.to_string()),
        ]
    );
    // Opened again: nothing to do.
    drop(Store::open(&path).unwrap());
    assert_eq!(discovery_rows(&path).len(), 4);
}

/// A forgotten node's rows go; its events stay under its host name, not
/// that of the node that takes its id next.
#[test]
fn a_forgotten_slot_keeps_its_events_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join(DB_FILE)).unwrap();
    let at = |lsn: u64, effects: Vec<Effect>| Applied {
        lsn,
        time_ms: lsn,
        wall_ms: None,
        effects,
    };
    let mut newcomer = row(0, Health::Up);
    if let Effect::Row(r) = &mut newcomer {
        r.hostname = "real".into();
    }
    s.apply(&[
        at(
            1,
            vec![Effect::Notice(Notice::Joined(0)), row(0, Health::Up)],
        ),
        at(
            2,
            vec![Effect::Forget {
                node: Some(0),
                addr: SocketAddr::from(([10, 0, 0, 0], 1984)),
                lsn: 2,
            }],
        ),
    ])
    .unwrap();
    assert!(s.nodes().unwrap().is_empty());
    s.apply(&[at(3, vec![Effect::Notice(Notice::Joined(0)), newcomer])])
        .unwrap();
    let hosts: Vec<Option<String>> = s
        .events(0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.hostname)
        .collect();
    assert_eq!(hosts, [Some("h0".into()), Some("real".into())]);
    assert_eq!(s.nodes().unwrap()[0].hostname, "real");
}
