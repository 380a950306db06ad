//! The SQLite view of the fleet and the decider's checkpoint.
//!
//! The store is written by one thread, from durable effects only (rule 4),
//! in batched transactions that are not synced (`synchronous=NORMAL`: the
//! store is a view that replay rebuilds). Each transaction records the LSN
//! its effects reflect (`applied_lsn`): effects of a record at or below it
//! are skipped, so replay after a crash applies nothing twice. The
//! checkpoint (the decider's state as rows, only those that changed, and
//! its LSN) is written with the effects up to its LSN in one transaction,
//! and that commit is synced (`synchronous=FULL`); log segments wholly
//! below it may then be released.
//!
//! Readers (`cma nodes`, `cma events`, `cma status`) open the database read
//! only; SQLite's WAL journal mode lets them read while the daemon writes.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::decide::decider::{CheckpointDelta, CheckpointRows, Effect, NodeRow, Notice};
use crate::decide::failure::Health;
use apply::apply_in;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "cma.sqlite";

/// A store error (SQLite's, with context).
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(format!("database: {e}"))
    }
}

/// The effects of one log record.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The record's LSN.
    pub lsn: u64,
    /// Its log time, ms.
    pub time_ms: u64,
    /// Its UTC wall-clock time, ms since the epoch, when the log says it
    /// (every run logs its clock in a RESUME record; see `engine::daemon`).
    pub wall_ms: Option<u64>,
    /// Its store effects (rows, discoveries, notices), in order.
    pub effects: Vec<Effect>,
}

/// The store.
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    hostname TEXT NOT NULL,
    addr TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    grp TEXT,
    status TEXT NOT NULL,
    switch TEXT,
    updated_lsn INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    lsn INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    node INTEGER,
    detail TEXT NOT NULL,
    PRIMARY KEY (lsn, seq)
);
CREATE INDEX IF NOT EXISTS events_time ON events (time_ms);
CREATE TABLE IF NOT EXISTS node_state (
    id INTEGER PRIMARY KEY,
    state TEXT,
    drift INTEGER NOT NULL,
    refused TEXT
);
CREATE TABLE IF NOT EXISTS stats (
    node INTEGER PRIMARY KEY,
    lsn INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ring_links (
    node INTEGER PRIMARY KEY,
    grp TEXT NOT NULL,
    prev INTEGER NOT NULL,
    next INTEGER NOT NULL,
    top_prev INTEGER,
    top_next INTEGER
);
CREATE TABLE IF NOT EXISTS ck_nodes (id INTEGER PRIMARY KEY, row BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ck_groups (key TEXT PRIMARY KEY, row BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS discovery (
    node INTEGER NOT NULL,
    name TEXT NOT NULL,
    lsn INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (node, name)
);
";

/// The database file of a data directory.
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(DB_FILE)
}

/// A node as `cma nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Id.
    pub id: i64,
    /// Host name.
    pub hostname: String,
    /// Address.
    pub addr: String,
    /// Group (switch or subnet).
    pub group: Option<String>,
    /// Status.
    pub status: String,
    /// Switch port.
    pub switch: Option<String>,
    /// Last change, log ms.
    pub updated_ms: i64,
    /// Last change, UTC wall clock (ms since the epoch), when known.
    pub updated_wall_ms: Option<i64>,
    /// The same, as text (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub updated_utc: Option<String>,
    /// Its last HBSTATE, summarised (`sending 2 expecting 2 late 0 dead 0
    /// at 12345 ms`), for agents that send it.
    pub state: Option<String>,
    /// Audits of its HBSTATE that found drift.
    pub drift: i64,
    /// Its last refused instruction (ACTIONNAK): "code N: reason".
    pub refused: Option<String>,
}

/// An event as `cma events` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// The record that caused it.
    pub lsn: i64,
    /// Log ms.
    pub time_ms: i64,
    /// Kind.
    pub kind: String,
    /// Node id, when about one.
    pub node: Option<i64>,
    /// Host name, when about a node.
    pub hostname: Option<String>,
    /// Details (JSON).
    pub detail: String,
    /// UTC wall clock, ms since the epoch, when known.
    pub wall_ms: Option<i64>,
    /// The same, as text (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub utc: Option<String>,
}

/// One ring as `cma rings` shows it: members in ring order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RingView {
    /// "switch X", "subnet Y", "default", or "top" (the representatives).
    pub group: String,
    /// Members in ring order: (host name, address).
    pub members: Vec<(String, String)>,
}

/// The rings as the store knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RingsView {
    /// The rings as of this record.
    pub as_of_lsn: u64,
    /// Group rings in key order, then the top ring.
    pub rings: Vec<RingView>,
}

/// Health as the database spells it.
pub fn status_name(h: &Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Suspect { .. } => "suspect",
        Health::Disputed { .. } => "disputed",
        Health::Dead(_) => "dead",
        Health::Left => "left",
        Health::Unreachable { .. } => "unreachable",
    }
}

fn notice_kind(n: &Notice) -> (&'static str, Option<u32>) {
    match n {
        Notice::Joined(i) => ("joined", Some(*i)),
        Notice::Restarted(i) => ("restarted", Some(*i)),
        Notice::Moved(i) => ("moved", Some(*i)),
        Notice::Suspected { node, .. } => ("suspected", Some(*node)),
        Notice::FalseAlarm { node, .. } => ("false_alarm", Some(*node)),
        Notice::PathFault { node, .. } => ("path_fault", Some(*node)),
        Notice::Dead { node, .. } => ("dead", Some(*node)),
        Notice::Left(i) => ("left", Some(*i)),
        Notice::Rejoined(i) => ("rejoined", Some(*i)),
        Notice::Resurrected(i) => ("resurrected", Some(*i)),
        Notice::SwitchFault { .. } => ("switch_fault", None),
        Notice::Healed { .. } => ("healed", None),
        Notice::CutOff(i) => ("cut_off", Some(*i)),
        Notice::Reconnected(i) => ("reconnected", Some(*i)),
        Notice::GaveUp { node, .. } => ("gave_up", Some(*node)),
        Notice::Forgotten { node, .. } => ("forgotten", Some(*node)),
        Notice::Late { node, .. } => ("late", Some(*node)),
        Notice::Drift { node, .. } => ("drift", Some(*node)),
        Notice::Refused { node, .. } => ("refused", Some(*node)),
        Notice::Degraded { node, .. } => ("degraded", Some(*node)),
        Notice::Conflict { node, .. } => ("conflict", Some(*node)),
    }
}

/// A group as operators read it: `switch ID`, `subnet NET/LEN`, `default`.
pub fn group_key_text(g: &crate::decide::topology::GroupKey) -> String {
    use crate::decide::topology::GroupKey;
    match g {
        GroupKey::Switch(s) => format!("switch {s}"),
        GroupKey::Subnet(s) => format!("subnet {s}"),
        GroupKey::Default => "default".to_string(),
    }
}

fn group_text(r: &NodeRow) -> Option<String> {
    r.group.as_ref().map(group_key_text)
}

impl Store {
    /// Opens (creating) the database for writing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Ordinary batches are not synced (DESIGN.md rule 4): the store is
        // a view that replay rebuilds from the log, whose segments are
        // released only after a checkpoint, and that commit is synced.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        // Columns added after the first release: added to older files.
        add_column(&conn, "events", "wall_ms", "INTEGER")?;
        add_column(&conn, "nodes", "updated_wall_ms", "INTEGER")?;
        // The host name of a forgotten node's events (its id is reused).
        add_column(&conn, "events", "host", "TEXT")?;
        keep_latest_discovery(&conn)?;
        Ok(Store { conn })
    }

    /// Opens an existing database read-only (safe while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            StoreError(format!(
                "cannot open {} (has `cma run` created it?): {e}",
                path.display()
            ))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store { conn })
    }

    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Effects of records up to this LSN are in the store.
    pub fn applied_lsn(&self) -> Result<u64, StoreError> {
        self.meta_u64("applied_lsn")
    }

    /// The LSN of the last checkpoint (0: none).
    pub fn checkpoint_lsn(&self) -> Result<u64, StoreError> {
        self.meta_u64("checkpoint_lsn")
    }

    /// The incremental checkpoint's rows, if one was written.
    pub fn checkpoint_rows(&self) -> Result<Option<CheckpointRows>, StoreError> {
        let globals: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'ck_globals'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(globals) = globals else {
            return Ok(None);
        };
        let mut st = self
            .conn
            .prepare("SELECT id, row FROM ck_nodes ORDER BY id")?;
        let nodes = st
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self
            .conn
            .prepare("SELECT key, row FROM ck_groups ORDER BY key")?;
        let groups = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CheckpointRows {
            lsn: self.checkpoint_lsn()?,
            globals,
            nodes,
            groups,
        }))
    }

    /// The whole-state checkpoint of files from before incremental rows:
    /// (LSN, decider state), if one is there (read once, to upgrade).
    pub fn checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let lsn = self.meta_u64("checkpoint_lsn")?;
        let state: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'checkpoint'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(state.map(|s| (lsn, s)))
    }

    /// Every group ring and the top ring, members in ring order, as of the
    /// last applied record (ring rows change with every ring change); for
    /// a file from before ring rows, as of the last checkpoint. `None`
    /// when nothing is known yet.
    pub fn rings(&self) -> Result<Option<RingsView>, StoreError> {
        if let Some(v) = self.rings_from_links()? {
            return Ok(Some(v));
        }
        // A file from before ring rows: the last checkpoint.
        let Some((lsn, state)) = self.checkpoint()? else {
            return Ok(None);
        };
        let d = crate::decide::decider::Decider::import(&state)
            .map_err(|e| StoreError(format!("checkpoint at LSN {lsn} does not read: {e}")))?;
        let member = |id| {
            d.node(id)
                .map(|n| (n.hostname.clone(), n.addr.to_string()))
                .unwrap_or_else(|| (format!("#{id}"), String::new()))
        };
        let mut rings: Vec<RingView> = d
            .topology()
            .groups()
            .map(|(k, r)| RingView {
                group: group_key_text(k),
                members: r.members().into_iter().map(member).collect(),
            })
            .collect();
        rings.push(RingView {
            group: "top".into(),
            members: d
                .topology()
                .top()
                .members()
                .into_iter()
                .map(member)
                .collect(),
        });
        Ok(Some(RingsView {
            as_of_lsn: lsn,
            rings,
        }))
    }

    /// Applies the effects of records in one transaction; records at or
    /// below the applied LSN are skipped. Returns the applied LSN.
    pub fn apply(&mut self, batch: &[Applied]) -> Result<u64, StoreError> {
        let applied = self.applied_lsn()?;
        let tx = self.conn.transaction()?;
        let last = apply_in(&tx, applied, batch)?;
        tx.commit()?;
        Ok(last)
    }

    /// Applies `batch` and writes the checkpoint `delta` (whose LSN the
    /// batch must reach) in one transaction: the rows that changed, the
    /// globals, the LSN. Returns the applied LSN.
    pub fn apply_and_checkpoint(
        &mut self,
        batch: &[Applied],
        delta: &CheckpointDelta,
    ) -> Result<u64, StoreError> {
        let applied = self.applied_lsn()?;
        // The checkpoint's commit is synced: log segments below it go next.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = self.conn.transaction()?;
        let last = apply_in(&tx, applied, batch)?;
        {
            let mut node =
                tx.prepare_cached("INSERT OR REPLACE INTO ck_nodes (id, row) VALUES (?1, ?2)")?;
            for (id, row) in &delta.nodes {
                node.execute(params![id, row])?;
            }
            let mut group =
                tx.prepare_cached("INSERT OR REPLACE INTO ck_groups (key, row) VALUES (?1, ?2)")?;
            let mut gone = tx.prepare_cached("DELETE FROM ck_groups WHERE key = ?1")?;
            for (key, row) in &delta.groups {
                match row {
                    Some(r) => group.execute(params![key, r])?,
                    None => gone.execute([key])?,
                };
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('ck_globals', ?1)",
            [&delta.globals],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('checkpoint_lsn', ?1)",
            [delta.lsn as i64],
        )?;
        // A whole-state checkpoint of an older file is superseded.
        tx.execute("DELETE FROM meta WHERE key = 'checkpoint'", [])?;
        tx.commit()?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(last)
    }

    /// Wall-clock ms minus log ms at the last applied record, when known:
    /// where replay after the checkpoint starts from until it meets a
    /// RESUME record.
    pub fn wall_offset_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'wall_offset_ms'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records the decider's state as of `lsn` (whose effects must already
    /// be applied).
    pub fn write_checkpoint(&mut self, lsn: u64, state: &[u8]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('checkpoint', ?1)",
            [state],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('checkpoint_lsn', ?1)",
            [lsn as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every node, by id.
    pub fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT n.id, n.hostname, n.addr, n.grp, n.status, n.switch, n.updated_ms,
                    s.state, COALESCE(s.drift, 0), s.refused, n.updated_wall_ms
             FROM nodes n LEFT JOIN node_state s ON s.id = n.id ORDER BY n.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(NodeView {
                id: r.get(0)?,
                hostname: r.get(1)?,
                addr: r.get(2)?,
                group: r.get(3)?,
                status: r.get(4)?,
                switch: r.get(5)?,
                updated_ms: r.get(6)?,
                state: r.get(7)?,
                drift: r.get(8)?,
                refused: r.get(9)?,
                updated_wall_ms: r.get(10)?,
                updated_utc: utc_of(r.get(10)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest statistics (STATS) of the node with this host name:
    /// (log ms, JSON).
    pub fn stats(&self, hostname: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT s.time_ms, s.json FROM stats s JOIN nodes n ON n.id = s.node
                 WHERE n.hostname = ?1",
                [hostname],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Events after `after_lsn` (oldest first), at most `limit`.
    pub fn events(&self, after_lsn: u64, limit: u32) -> Result<Vec<EventView>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT e.lsn, e.time_ms, e.kind, e.node, COALESCE(e.host, n.hostname), e.detail,
                    e.wall_ms
             FROM events e LEFT JOIN nodes n ON n.id = e.node AND e.host IS NULL
             WHERE e.lsn > ?1 ORDER BY e.lsn, e.seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after_lsn as i64, limit], |r| {
            Ok(EventView {
                lsn: r.get(0)?,
                time_ms: r.get(1)?,
                kind: r.get(2)?,
                node: r.get(3)?,
                hostname: r.get(4)?,
                detail: r.get(5)?,
                wall_ms: r.get(6)?,
                utc: utc_of(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Nodes per status.
    pub fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT status, COUNT(*) FROM nodes GROUP BY status ORDER BY status")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The rings as of the last applied record, walked from the ring rows
    /// the store keeps with every change (`None` when there are none).
    fn rings_from_links(&self) -> Result<Option<RingsView>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT l.node, l.grp, l.next, l.top_next, COALESCE(n.hostname, ''), COALESCE(n.addr, '')
             FROM ring_links l LEFT JOIN nodes n ON n.id = l.node ORDER BY l.node",
        )?;
        type Row = (i64, String, i64, Option<i64>, String, String);
        let rows: Vec<Row> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        if rows.is_empty() {
            return Ok(None);
        }
        let by_id: BTreeMap<i64, &Row> = rows.iter().map(|r| (r.0, r)).collect();
        let member = |id: i64| {
            by_id
                .get(&id)
                .map(|r| (r.4.clone(), r.5.clone()))
                .unwrap_or_else(|| (format!("#{id}"), String::new()))
        };
        // Walks a cycle from `start` along `next`, at most `limit` steps
        // (the rows are one consistent snapshot; the limit guards a file
        // edited by hand).
        let walk = |start: i64, next: &dyn Fn(&Row) -> Option<i64>| {
            let mut out = Vec::new();
            let mut at = start;
            while out.len() <= rows.len() {
                out.push(member(at));
                match by_id.get(&at).and_then(|r| next(r)) {
                    Some(n) if n != start => at = n,
                    _ => break,
                }
            }
            out
        };
        let mut firsts: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &rows {
            firsts.entry(r.1.as_str()).or_insert(r.0);
        }
        let mut rings: Vec<RingView> = firsts
            .iter()
            .map(|(g, &first)| RingView {
                group: (*g).to_string(),
                members: walk(first, &|r: &Row| Some(r.2)),
            })
            .collect();
        let top = rows.iter().find(|r| r.3.is_some()).map(|r| r.0);
        rings.push(RingView {
            group: "top".into(),
            members: top.map_or_else(Vec::new, |t| walk(t, &|r: &Row| r.3)),
        });
        Ok(Some(RingsView {
            as_of_lsn: self.applied_lsn()?,
            rings,
        }))
    }

    /// Groups with their sizes (nodes in service).
    pub fn groups(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT grp, COUNT(*) FROM nodes WHERE grp IS NOT NULL AND status NOT IN ('dead', 'left')
             GROUP BY grp ORDER BY grp",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Adds `column` to `table` unless it is there (a file made by an older
/// version).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<(), StoreError> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    if !names.iter().any(|n| n == column) {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// A file made before discovery was kept per name held every discovery
/// ever received (a node re-sending its discovery grew it without bound):
/// it keeps the latest per node and name (see `apply::discovery_name`).
fn keep_latest_discovery(conn: &Connection) -> Result<(), StoreError> {
    let mut st = conn.prepare("PRAGMA table_info(discovery)")?;
    let names: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    if names.iter().any(|n| n == "name") {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE discovery_latest (node INTEGER NOT NULL, name TEXT NOT NULL,
             lsn INTEGER NOT NULL, json TEXT NOT NULL, PRIMARY KEY (node, name));
         INSERT OR REPLACE INTO discovery_latest (node, name, lsn, json)
             SELECT node,
                 CASE WHEN NOT json_valid(json) THEN ''
                      WHEN json_type(json, '$.instance') = 'text'
                          THEN substr(json_extract(json, '$.instance'), 1, 256)
                      WHEN json_type(json, '$.discovertype') = 'text'
                          THEN substr(json_extract(json, '$.discovertype'), 1, 256)
                      ELSE '' END,
                 lsn, json
             FROM discovery ORDER BY lsn;
         DROP TABLE discovery;
         ALTER TABLE discovery_latest RENAME TO discovery;
         COMMIT;",
    )?;
    Ok(())
}

fn utc_of(ms: Option<i64>) -> Option<String> {
    ms.and_then(|m| u64::try_from(m).ok())
        .map(crate::logger::utc)
}

mod apply;
#[cfg(test)]
mod tests;
