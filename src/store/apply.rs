//! Applying a batch of durable effects to the tables, in one transaction.

use std::collections::{HashMap, HashSet};

use rusqlite::params;

use super::{Applied, StoreError, group_key_text, group_text, notice_kind, status_name};
use crate::decide::NodeId;
use crate::decide::decider::Effect;
use crate::decide::failure::Health;

/// Applies the effects of `batch` above `applied` inside `tx`; returns
/// the applied LSN.
///
/// A node's row and its ring links are whole states: only the last of each
/// node in the batch is written (a busy node's many updates cost one upsert
/// per batch). Events, discovery and statistics are each written.
///
/// One `match` arm per effect kind, with the prepared statements they use.
pub(super) fn apply_in(
    tx: &rusqlite::Transaction<'_>,
    applied: u64,
    batch: &[Applied],
) -> Result<u64, StoreError> {
    let mut last = applied;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO nodes (id, hostname, addr, incarnation, grp, status, switch, updated_lsn, updated_ms, updated_wall_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(id) DO UPDATE SET hostname = ?2, addr = ?3, incarnation = ?4, grp = ?5,
                 status = ?6, switch = ?7, updated_lsn = ?8, updated_ms = ?9, updated_wall_ms = ?10",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT OR IGNORE INTO events (lsn, seq, time_ms, kind, node, detail, wall_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut disc = tx.prepare_cached(
            "INSERT INTO discovery (node, name, lsn, json) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(node, name) DO UPDATE SET lsn = excluded.lsn, json = excluded.json
                 WHERE excluded.lsn >= discovery.lsn",
        )?;
        let mut state = tx.prepare_cached(
            "INSERT OR REPLACE INTO node_state (id, state, drift, refused) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut stats = tx.prepare_cached(
            "INSERT OR REPLACE INTO stats (node, lsn, time_ms, json) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut link = tx.prepare_cached(
            "INSERT OR REPLACE INTO ring_links (node, grp, prev, next, top_prev, top_next)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut unlink = tx.prepare_cached("DELETE FROM ring_links WHERE node = ?1")?;
        // A forgotten registration's slot: nothing of it is kept (its id
        // is reused by the next registration) but its events, which keep
        // its host name.
        let mut vacate = [
            "UPDATE events SET host = (SELECT hostname FROM nodes WHERE id = ?1)
             WHERE node = ?1 AND host IS NULL",
            "DELETE FROM nodes WHERE id = ?1",
            "DELETE FROM node_state WHERE id = ?1",
            "DELETE FROM stats WHERE node = ?1",
            "DELETE FROM discovery WHERE node = ?1",
            "DELETE FROM ring_links WHERE node = ?1",
        ]
        .into_iter()
        .map(|q| tx.prepare_cached(q))
        .collect::<Result<Vec<_>, _>>()?;
        let superseded = superseded_states(applied, batch);
        for (i, a) in batch.iter().enumerate() {
            if a.lsn <= applied {
                continue;
            }
            last = last.max(a.lsn);
            let mut seq = 0i64;
            for (j, e) in a.effects.iter().enumerate() {
                if superseded.contains(&(i, j)) {
                    continue;
                }
                match e {
                    Effect::Row(r) => {
                        let switch = r.switch.as_ref().map(|(c, p)| match p {
                            Some(p) => format!("{c} port {p}"),
                            None => c.clone(),
                        });
                        upsert.execute(params![
                            r.id,
                            r.hostname,
                            r.addr.to_string(),
                            r.incarnation as i64,
                            group_text(r),
                            if r.gave_up && matches!(r.health, Health::Up) {
                                "unreachable"
                            } else if r.unconfirmed && matches!(r.health, Health::Up) {
                                "joining"
                            } else {
                                status_name(&r.health)
                            },
                            switch,
                            a.lsn as i64,
                            a.time_ms as i64,
                            a.wall_ms.map(|w| w as i64)
                        ])?;
                        let summary = r.state.as_ref().map(|x| {
                            format!(
                                "sending {} expecting {} late {} dead {} at {} ms",
                                x.sending, x.expecting, x.late, x.dead, x.time_ms
                            )
                        });
                        let refused = match (&r.degraded, r.conflict, &r.refused) {
                            (Some(d), _, _) => Some(format!("degraded: {d}")),
                            (None, Some(a), _) => Some(format!(
                                "conflict: another live host with this name at {a}, refused"
                            )),
                            (None, None, Some((c, why))) => Some(format!("code {c}: {why}")),
                            _ => None,
                        };
                        state.execute(params![r.id, summary, r.drift as i64, refused])?;
                    }
                    Effect::Ring { node, links } => match links {
                        Some(l) => {
                            link.execute(params![
                                node,
                                group_key_text(&l.group),
                                l.links.0,
                                l.links.1,
                                l.top.map(|t| t.0),
                                l.top.map(|t| t.1)
                            ])?;
                        }
                        None => {
                            unlink.execute([node])?;
                        }
                    },
                    Effect::Stats { node, json } => {
                        stats.execute(params![node, a.lsn as i64, a.time_ms as i64, json])?;
                    }
                    Effect::Notice(n) => {
                        let (kind, node) = notice_kind(n);
                        let detail = serde_json::to_string(n).unwrap_or_default();
                        event.execute(params![
                            a.lsn as i64,
                            seq,
                            a.time_ms as i64,
                            kind,
                            node,
                            detail,
                            a.wall_ms.map(|w| w as i64)
                        ])?;
                        seq += 1;
                    }
                    Effect::Discovery { node, json } => {
                        disc.execute(params![node, discovery_name(json), a.lsn as i64, json])?;
                    }
                    Effect::Forget {
                        node: Some(node), ..
                    } => {
                        for q in &mut vacate {
                            q.execute([node])?;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('applied_lsn', ?1)",
        [last as i64],
    )?;
    if let Some(a) = batch.iter().rev().find(|a| a.lsn > applied)
        && let Some(w) = a.wall_ms
    {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('wall_offset_ms', ?1)",
            [w as i64 - a.time_ms as i64],
        )?;
    }
    Ok(last)
}

/// The positions (record, effect) of rows and ring links in `batch` that a
/// later one of the same node replaces.
fn superseded_states(applied: u64, batch: &[Applied]) -> HashSet<(usize, usize)> {
    let mut latest: HashMap<(bool, NodeId), (usize, usize)> = HashMap::new();
    let mut superseded = HashSet::new();
    for (i, a) in batch.iter().enumerate() {
        if a.lsn <= applied {
            continue;
        }
        for (j, e) in a.effects.iter().enumerate() {
            let key = match e {
                Effect::Row(r) => (true, r.id),
                Effect::Ring { node, .. } => (false, *node),
                _ => continue,
            };
            if let Some(old) = latest.insert(key, (i, j)) {
                superseded.insert(old);
            }
        }
    }
    superseded
}

/// The name a discovery is kept under, the latest per node and name: its
/// `instance` (a nanoprobe names every discovery it sends), else its
/// `discovertype`, else "" (at most 256 characters). A node's repeated or
/// changed discovery replaces the one before, so what a node can make the
/// store hold is bounded by the kinds of discovery it sends, not by how
/// often it sends them.
pub(super) fn discovery_name(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Names {
        instance: Option<serde_json::Value>,
        discovertype: Option<serde_json::Value>,
    }
    let Ok(n) = serde_json::from_str::<Names>(json) else {
        return String::new();
    };
    let pick =
        |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_str().map(str::to_string));
    pick(&n.instance)
        .or_else(|| pick(&n.discovertype))
        .map(|s| s.chars().take(256).collect())
        .unwrap_or_default()
}
