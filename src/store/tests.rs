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
