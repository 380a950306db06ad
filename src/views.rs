//! What `cma nodes`, `rings`, `events`, `stats` and `status` print: tables
//! for people and JSON lines for programs, from the store's read-only
//! views. Pure functions of their input (the CLI reads and prints), so
//! tests reach them. Every string that came from the wire is shown through
//! [`clean`]: control characters escaped, length limited.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::engine::fatal::Health;
use crate::store::{EventView, NodeView, RingsView};
use crate::text::clean;

/// `cma nodes` as a table.
pub fn nodes_table(list: &[NodeView]) -> String {
    let mut out = format!(
        "{:>6}  {:<24} {:<24} {:<12} {:<24} {:<24} {:<24} {:>5}  last state / refusal\n",
        "id", "host", "address", "status", "since (UTC)", "group", "switch", "drift"
    );
    for n in list {
        let mut note = n.state.clone().unwrap_or_else(|| "-".into());
        if let Some(r) = &n.refused {
            note += &format!("; refused {r}");
        }
        let _ = writeln!(
            out,
            "{:>6}  {:<24} {:<24} {:<12} {:<24} {:<24} {:<24} {:>5}  {}",
            n.id,
            clean(&n.hostname),
            n.addr,
            n.status,
            n.updated_utc.as_deref().unwrap_or("-"),
            clean(n.group.as_deref().unwrap_or("-")),
            clean(n.switch.as_deref().unwrap_or("-")),
            n.drift,
            clean(&note),
        );
    }
    out
}

/// `cma nodes --json`: one object per line (JSON escapes every control
/// character itself).
pub fn nodes_json(list: &[NodeView]) -> String {
    list.iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default() + "\n")
        .collect()
}

/// `cma stats HOST`: the latest STATS of a node.
pub fn stats_text(node: &str, time_ms: i64, stats: &str) -> String {
    let mut out = format!("{} at log time {time_ms} ms:\n", clean(node));
    match serde_json::from_str::<Value>(stats) {
        Ok(Value::Object(m)) => {
            for (k, v) in m {
                let _ = writeln!(out, "  {:<20} {}", clean(&k), clean(&v.to_string()));
            }
        }
        _ => {
            let _ = writeln!(out, "  {}", clean(stats));
        }
    }
    out
}

/// `cma stats HOST --json`.
pub fn stats_json(node: &str, time_ms: i64, stats: &str) -> String {
    let parsed =
        serde_json::from_str::<Value>(stats).unwrap_or_else(|_| Value::String(stats.into()));
    json!({"node": node, "time_ms": time_ms, "stats": parsed}).to_string() + "\n"
}

/// `cma rings` as a table: a header, one line per ring (group rings in key
/// order, then the top ring), members in ring order (the first eight).
pub fn rings_table(v: &RingsView) -> String {
    const SHOWN: usize = 8;
    let mut out = format!(
        "{:>6}  {:<32} members in ring order (as of LSN {})\n",
        "nodes", "ring", v.as_of_lsn
    );
    for r in &v.rings {
        let mut names: Vec<std::borrow::Cow<'_, str>> =
            r.members.iter().take(SHOWN).map(|m| clean(&m.0)).collect();
        if r.members.len() > SHOWN {
            names.push("...".into());
        }
        let _ = writeln!(
            out,
            "{:>6}  {:<32} {}",
            r.members.len(),
            clean(&r.group),
            names.join(" -> ")
        );
    }
    out
}

/// `cma rings --json`: one object per ring.
pub fn rings_json(v: &RingsView) -> String {
    let mut out = String::new();
    for r in &v.rings {
        let members: Vec<Value> = r
            .members
            .iter()
            .map(|(h, a)| json!({"host": h, "addr": a}))
            .collect();
        let line = json!({
            "group": r.group,
            "nodes": r.members.len(),
            "members": members,
            "as_of_lsn": v.as_of_lsn,
        });
        let _ = writeln!(out, "{line}");
    }
    out
}

/// One line of `cma events`.
pub fn event_line(e: &EventView) -> String {
    format!(
        "{:<24}  lsn {:<10} {:<14} {:<24} {}\n",
        e.utc.as_deref().unwrap_or("-"),
        e.lsn,
        e.kind,
        clean(e.hostname.as_deref().unwrap_or("-")),
        clean(&e.detail)
    )
}

/// One line of `cma events --json`.
pub fn event_json(e: &EventView) -> String {
    serde_json::to_string(e).unwrap_or_default() + "\n"
}

/// The daemon's health for `cma status`, from its health file and whether
/// its process is alive: a line for people and a JSON value.
pub fn describe_health(h: Option<&Health>, alive: bool) -> (String, Value) {
    let Some(h) = h else {
        return ("never ran here".into(), json!({"state": "never ran"}));
    };
    let dead = h.state == "running" && !alive;
    let line = match h.state.as_str() {
        "running" if dead => "not running (it did not stop cleanly: killed or crashed)".into(),
        "running" => format!("running (pid {})", h.pid),
        "failed" => format!(
            "failed: {}",
            clean(h.reason.as_deref().unwrap_or("(no reason recorded)"))
        ),
        other => clean(other).into_owned(),
    };
    let value = json!({
        "state": if dead { "dead" } else { h.state.as_str() },
        "pid": h.pid,
        "since_unix_ms": h.since_unix_ms,
        "reason": h.reason,
    });
    (line, value)
}

/// `cma status`: the daemon, nodes per status, how far the database is.
pub fn status_text(daemon: &str, counts: &[(String, i64)], applied: u64, cp: u64) -> String {
    let mut out = format!("daemon: {daemon}\n");
    let total: i64 = counts.iter().map(|c| c.1).sum();
    let _ = writeln!(out, "nodes: {total}");
    for (k, v) in counts {
        let _ = writeln!(out, "  {k:<12} {v}");
    }
    let _ = writeln!(
        out,
        "database reflects the log through LSN {applied}; checkpoint at LSN {cp}"
    );
    out
}

/// `cma status --json`.
pub fn status_json(daemon: &Value, counts: &[(String, i64)], applied: u64, cp: u64) -> String {
    let by: serde_json::Map<String, Value> = counts
        .iter()
        .map(|(k, v)| (k.clone(), (*v).into()))
        .collect();
    json!({"daemon": daemon, "nodes": by, "applied_lsn": applied, "checkpoint_lsn": cp}).to_string()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RingView;

    fn node(host: &str) -> NodeView {
        NodeView {
            id: 3,
            hostname: host.into(),
            addr: "10.0.0.3:1984".into(),
            group: Some("switch aa:bb".into()),
            status: "up".into(),
            switch: None,
            updated_ms: 5,
            updated_wall_ms: None,
            updated_utc: None,
            state: None,
            drift: 0,
            refused: Some("code 2: no".into()),
        }
    }

    #[test]
    fn a_host_name_with_control_characters_cannot_forge_table_lines() {
        let t = nodes_table(&[node("evil\nERROR forged\x1b[31m")]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains('\x1b'));
        assert!(t.contains("refused code 2: no"));
        // JSON escapes them itself and stays one line per node.
        let j = nodes_json(&[node("a\nb")]);
        assert_eq!(j.lines().count(), 1);
        assert!(j.contains("a\\nb"));
    }

    #[test]
    fn rings_show_eight_members_then_an_ellipsis() {
        let members: Vec<(String, String)> = (0..10)
            .map(|i| (format!("h{i}"), format!("10.0.0.{i}:1984")))
            .collect();
        let v = RingsView {
            as_of_lsn: 42,
            rings: vec![RingView {
                group: "top".into(),
                members,
            }],
        };
        let t = rings_table(&v);
        assert!(t.contains("as of LSN 42"));
        assert!(t.contains("h0 -> h1"));
        assert!(t.contains("h7 -> ..."));
        assert!(!t.contains("h8"));
        let j: Value = serde_json::from_str(rings_json(&v).trim()).unwrap();
        assert_eq!(j["nodes"], 10);
    }

    #[test]
    fn health_says_running_dead_failed_or_never() {
        let h = |state: &str, reason: Option<&str>| Health {
            state: state.into(),
            pid: 77,
            since_unix_ms: 1,
            reason: reason.map(str::to_string),
        };
        assert_eq!(describe_health(None, false).0, "never ran here");
        assert_eq!(
            describe_health(Some(&h("running", None)), true).0,
            "running (pid 77)"
        );
        let (line, v) = describe_health(Some(&h("running", None)), false);
        assert!(line.starts_with("not running"));
        assert_eq!(v["state"], "dead");
        let (line, v) = describe_health(
            Some(&h("failed", Some("the store thread failed: full\n"))),
            false,
        );
        assert_eq!(line, "failed: the store thread failed: full\\n");
        assert_eq!(v["state"], "failed");
        assert_eq!(
            describe_health(Some(&h("stopped", None)), false).0,
            "stopped"
        );
        let s = status_text("stopped", &[("up".into(), 2), ("dead".into(), 1)], 9, 8);
        assert!(s.contains("nodes: 3"));
        assert!(s.contains("through LSN 9; checkpoint at LSN 8"));
    }
}
