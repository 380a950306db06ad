//! The `cma` command line: parses arguments and calls the library.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::time::Duration;

use cma::text::clean;
use cma::views;

use cma::decode::{DecodeInput, run_decode};
use cma::wal_tools::Verdict;

/// cma: Central Monitoring Authority for large server fleets.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CMA: listen for agents, log, decide, keep the database.
    Run {
        /// TOML configuration (missing keys take their defaults: `cma config --default`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory (log and database); overrides the file.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on (repeatable); overrides the file.
        #[arg(long, value_name = "ADDR")]
        listen: Vec<std::net::SocketAddr>,
        /// Start even if the log is corrupt before its last commit: keep the
        /// good prefix and move the rest aside.
        #[arg(long)]
        wal_salvage: bool,
    },
    /// Print the configuration.
    Config {
        /// The commented default configuration.
        #[arg(long)]
        default: bool,
        /// Check a configuration file and print it with defaults filled in.
        #[arg(long, value_name = "FILE", conflicts_with = "default")]
        check: Option<PathBuf>,
    },
    /// The fleet's nodes, from the database (read-only; safe while running).
    Nodes {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every group ring (switch or subnet) and the top ring, with their
    /// members in ring order; current (the database keeps ring rows with
    /// every change). --json: one JSON object per ring.
    Rings {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Events and verdicts (joins, deaths, path and switch faults).
    Events {
        #[command(flatten)]
        db: DbArgs,
        /// Only events of records after this LSN.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep printing new events.
        #[arg(long)]
        follow: bool,
    },
    /// The latest statistics an agent of ours reported (STATS).
    Stats {
        /// Its host name.
        node: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Nodes per status and how far the database is.
    Status {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Decode nanoprobe packets (hex or pcap) to JSON lines, or text.
    Decode {
        /// Datagrams as hex strings; none: read one per line from stdin.
        hex: Vec<String>,
        /// Read UDP datagrams from a classic pcap file instead.
        #[arg(long, value_name = "FILE", conflicts_with = "hex")]
        pcap: Option<PathBuf>,
        /// Print a readable form instead of JSON lines.
        #[arg(long)]
        text: bool,
        /// Decrypt CRYPTCURVE25519 FrameSets with the keys of this
        /// directory (the CMA's, or a nanoprobe's crypto.d).
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
    },
    /// The CMA's keys and the nanoprobe keys it trusts (CRYPTCURVE25519).
    Keys {
        /// Key directory (default: the configuration's auth.key_dir, else
        /// DATA_DIR/keys).
        #[arg(long, global = true, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// TOML configuration to take the key directory from.
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: cma::crypt::cli::KeysCommand,
    },
    /// Inspect a write-ahead log directory (read-only).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Run the decider against a simulated fleet (in memory, virtual
    /// clock) and print detection times, false positives and costs.
    Simulate {
        /// Agents.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Seed (the same seed gives the same run).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Faults, e.g. `crash=20,reboot=5,shutdown=5,partition=2,link=5`.
        #[arg(
            long,
            default_value = "crash=20,reboot=5,shutdown=5,partition=2,link=5"
        )]
        faults: String,
        /// Datagram loss between agents and the CMA (0..1).
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// Agents per switch.
        #[arg(long, default_value_t = 40)]
        switch_size: usize,
        /// Check the decider's invariants after every ring change (slow on
        /// large fleets; on by default up to 100,000 nodes).
        #[arg(long)]
        check: Option<bool>,
        /// Agents speak HBSTATE and send it every this many seconds (0:
        /// they behave as unmodified nanoprobes).
        #[arg(long, default_value_t = 0)]
        state_interval: u64,
        /// Probability that an agent ACKs a ring instruction without
        /// carrying it out (0..1).
        #[arg(long, default_value_t = 0.0)]
        instr_loss: f64,
    },
    /// Our agent: a nanoprobe for this host (STARTUP, heartbeats, reports).
    Agent {
        /// The CMA's address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1984")]
        cma: std::net::SocketAddr,
        /// Address to listen on for heartbeats and instructions.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:1984")]
        listen: std::net::SocketAddr,
        /// Host name to register (default: the system's).
        #[arg(long)]
        hostname: Option<String>,
        /// Play a switch with this chassis id on the first NIC with carrier:
        /// when the CMA asks (DODISCOVER `#SWITCH`), report it as a
        /// nanoprobe would (SWDISCOVER with an LLDP frame).
        #[arg(long, value_name = "ID")]
        switch_id: Option<String>,
        /// error, warn, info, debug or trace.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Many agents in one process, each on its own loopback address
    /// (127.a.b.c), with scripted faults and a report.
    Fleet {
        /// Agents.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// The CMA's address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1984")]
        cma: std::net::SocketAddr,
        /// Simulated switches (agents spread over them in blocks).
        #[arg(long, default_value_t = 10)]
        switches: usize,
        /// First agent address (the others follow; inside 127.0.0.0/8).
        #[arg(long, default_value = "127.1.0.1")]
        base: std::net::Ipv4Addr,
        /// UDP port of every agent (0: ephemeral ports). Not 1984 by
        /// default: a CMA on this host listening on 0.0.0.0:1984 holds that
        /// port on every loopback address.
        #[arg(long, default_value_t = 1985)]
        port: u16,
        /// Kill COUNT agents at time T (seconds, or 250ms/2m), e.g. 10@60s. Repeatable.
        #[arg(long, value_name = "COUNT@T")]
        kill: Vec<String>,
        /// Restart COUNT agents (new incarnations) at T. Repeatable.
        #[arg(long, value_name = "COUNT@T")]
        restart: Vec<String>,
        /// Shut COUNT agents down cleanly at T. Repeatable.
        #[arg(long, value_name = "COUNT@T")]
        shutdown: Vec<String>,
        /// Cut switch S off (agents and the CMA outside it) at T, as S@T. Repeatable.
        #[arg(long, value_name = "S@T")]
        partition_switch: Vec<String>,
        /// Probability that a datagram an agent sends is lost.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Seed of the loss draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Agents started per second.
        #[arg(long, default_value_t = 2000)]
        join_rate: u64,
        /// Stop after this many seconds (default: at SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
        /// The daemon's data directory, read (read-only) for its view:
        /// rings, suspects, deaths, verdicts. "": none.
        #[arg(long, value_name = "DIR", default_value = "cma-data")]
        data_dir: PathBuf,
        /// At the end, just stop instead of shutting every agent down cleanly.
        #[arg(long)]
        no_leave: bool,
        /// Final report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Whole-system benchmarks (loopback only).
    Bench {
        #[command(subcommand)]
        command: cma::bench::cli::BenchCommand,
    },
}

/// Where the database is and how to print.
#[derive(clap::Args)]
struct DbArgs {
    /// Data directory of the daemon.
    #[arg(long, value_name = "DIR", default_value = "cma-data")]
    data_dir: PathBuf,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum WalCommand {
    /// Check every record and say how the log ends (exit 1 on corruption).
    Verify {
        /// The log directory (e.g. cma-data/wal).
        dir: PathBuf,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Print records as JSON lines.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First LSN to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Decode FrameSet payloads.
        #[arg(long)]
        decode: bool,
    },
    /// Crash-test child: append numbered records and print durable LSNs.
    #[command(hide = true)]
    CrashChild {
        dir: PathBuf,
        #[arg(long, default_value_t = 64 * 1024)]
        segment_size: usize,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// One `match` over the subcommands, an arm per command: as long as the
/// command list, and each arm only a call.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            data_dir,
            listen,
            wal_salvage,
        } => run(config, data_dir, listen, wal_salvage),
        Command::Config { default, check } => config_cmd(default, check),
        Command::Nodes { db } => nodes(&db),
        Command::Rings { db } => rings(&db),
        Command::Events { db, after, follow } => events(&db, after, follow),
        Command::Status { db } => status(&db),
        Command::Stats { node, db } => stats(&db, &node),
        Command::Decode {
            hex,
            pcap,
            text,
            keys,
        } => decode(hex, pcap, text, keys),
        Command::Keys {
            dir,
            config,
            command,
        } => cma::crypt::cli::run(dir, config, command),
        Command::Wal { command } => wal(command),
        Command::Bench { command } => cma::bench::cli::bench(command),
        Command::Simulate {
            nodes,
            seed,
            faults,
            loss,
            switch_size,
            check,
            state_interval,
            instr_loss,
        } => simulate(
            nodes,
            seed,
            &faults,
            loss,
            switch_size,
            check,
            (state_interval, instr_loss),
        ),
        Command::Agent {
            cma,
            listen,
            hostname,
            switch_id,
            log_level,
        } => agent(
            cma::agent::run::AgentOptions {
                cma,
                listen,
                hostname,
                switch_id,
            },
            log_level.parse().unwrap_or(log::LevelFilter::Info),
        ),
        Command::Fleet {
            nodes,
            cma,
            switches,
            base,
            port,
            kill,
            restart,
            shutdown,
            partition_switch,
            loss,
            seed,
            join_rate,
            duration,
            data_dir,
            no_leave,
            json,
        } => {
            let mut faults = Vec::new();
            let mut parse = |list: &[String], make: fn(usize, u64) -> cma::fleet::Fault| {
                for s in list {
                    match cma::fleet::parse_at(s) {
                        Ok((n, t)) => faults.push(make(n, t)),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            };
            use cma::fleet::Fault;
            let parsed = parse(&kill, |count, at_ms| Fault::Kill { count, at_ms })
                .and_then(|()| parse(&restart, |count, at_ms| Fault::Restart { count, at_ms }))
                .and_then(|()| parse(&shutdown, |count, at_ms| Fault::Shutdown { count, at_ms }))
                .and_then(|()| {
                    parse(&partition_switch, |switch, at_ms| Fault::Partition {
                        switch,
                        at_ms,
                    })
                });
            if let Err(e) = parsed {
                eprintln!("cma fleet: {e}");
                return ExitCode::from(2);
            }
            if let Some(Fault::Partition { switch, .. }) = faults
                .iter()
                .find(|f| matches!(f, Fault::Partition { switch, .. } if *switch >= switches))
            {
                eprintln!("cma fleet: switch {switch} does not exist (--switches {switches})");
                return ExitCode::from(2);
            }
            if !(0.0..1.0).contains(&loss) {
                eprintln!("cma fleet: --loss must be in [0, 1)");
                return ExitCode::from(2);
            }
            let mut cfg = cma::fleet::FleetConfig::new(nodes, cma);
            cfg.switches = switches.max(1);
            cfg.base = base;
            cfg.port = port;
            cfg.loss = loss;
            cfg.seed = seed;
            cfg.join_rate = join_rate.max(1);
            let opts = cma::fleet::RunOptions {
                faults,
                duration: duration.map(Duration::from_secs_f64),
                data_dir: (!data_dir.as_os_str().is_empty()).then_some(data_dir),
                json,
                progress: Some(Duration::from_secs(1)),
                leave: !no_leave,
            };
            fleet(cfg, opts)
        }
    }
}

fn stop_flag(what: &str) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, ExitCode> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("cma {what}: cannot handle signal {sig}: {e}");
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(stop)
}

fn agent(opts: cma::agent::run::AgentOptions, level: log::LevelFilter) -> ExitCode {
    cma::logger::init(level);
    let stop = match stop_flag("agent") {
        Ok(s) => s,
        Err(c) => return c,
    };
    match cma::agent::run::run(opts, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cma agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fleet(cfg: cma::fleet::FleetConfig, opts: cma::fleet::RunOptions) -> ExitCode {
    let stop = match stop_flag("fleet") {
        Ok(s) => s,
        Err(c) => return c,
    };
    let json = opts.json;
    match cma::fleet::run(cfg, opts, stop) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                let _ = cma::fleet::print_report(&r, &mut std::io::stdout());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cma fleet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Vec<std::net::SocketAddr>,
    salvage: bool,
) -> ExitCode {
    let mut c = match config {
        Some(p) => match cma::config::Config::load(&p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cma run: {e}");
                return ExitCode::from(2);
            }
        },
        None => cma::config::Config::default(),
    };
    if let Some(d) = data_dir {
        c.data_dir = d;
    }
    if !listen.is_empty() {
        c.listen = listen;
    }
    cma::logger::init(cma::config::level(&c));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("cma run: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    log::info!(
        "cma {} starting: data in {}",
        env!("CARGO_PKG_VERSION"),
        c.data_dir.display()
    );
    match cma::engine::daemon::run(c, salvage, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("cma run: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_cmd(default: bool, check: Option<PathBuf>) -> ExitCode {
    if let Some(p) = check {
        return match cma::config::Config::load(&p) {
            Ok(c) => {
                print!("{}", toml::to_string(&c).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cma config: {e}");
                ExitCode::from(2)
            }
        };
    }
    if default {
        print!("{}", cma::config::DEFAULT_CONFIG);
    } else {
        print!(
            "{}",
            toml::to_string(&cma::config::Config::default()).unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}

fn open_db(db: &DbArgs) -> Result<cma::store::Store, ExitCode> {
    cma::store::Store::open_read_only(&cma::store::db_path(&db.data_dir)).map_err(|e| {
        eprintln!("cma: {e}");
        ExitCode::FAILURE
    })
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("cma: {e}");
    ExitCode::FAILURE
}

fn nodes(db: &DbArgs) -> ExitCode {
    let s = match open_db(db) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match s.nodes() {
        Ok(list) if db.json => print!("{}", views::nodes_json(&list)),
        Ok(list) => print!("{}", views::nodes_table(&list)),
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}

fn stats(db: &DbArgs, node: &str) -> ExitCode {
    let s = match open_db(db) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match s.stats(node) {
        Ok(Some((time_ms, json))) if db.json => {
            print!("{}", views::stats_json(node, time_ms, &json))
        }
        Ok(Some((time_ms, json))) => print!("{}", views::stats_text(node, time_ms, &json)),
        Ok(None) => {
            return fail(format!(
                "no statistics from {} (unknown host, or an agent that does not send STATS)",
                clean(node)
            ));
        }
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}

fn rings(db: &DbArgs) -> ExitCode {
    let s = match open_db(db) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match s.rings() {
        Ok(Some(v)) if db.json => print!("{}", views::rings_json(&v)),
        Ok(Some(v)) => print!("{}", views::rings_table(&v)),
        Ok(None) => return fail("no rings yet: no node has joined"),
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}

fn events(db: &DbArgs, after: u64, follow: bool) -> ExitCode {
    let s = match open_db(db) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut after = after;
    loop {
        let list = match s.events(after, 10_000) {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        for e in &list {
            if db.json {
                print!("{}", views::event_json(e));
            } else {
                print!("{}", views::event_line(e));
            }
            after = after.max(e.lsn as u64);
        }
        if !follow {
            return ExitCode::SUCCESS;
        }
        if list.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn status(db: &DbArgs) -> ExitCode {
    let s = match open_db(db) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let (counts, applied, cp) = match (s.status_counts(), s.applied_lsn(), s.checkpoint_lsn()) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(e),
    };
    let health = match cma::engine::fatal::read_health(&db.data_dir) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let alive = health.as_ref().is_some_and(|h| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(h.pid as i32), None).is_ok()
    });
    let (line, value) = views::describe_health(health.as_ref(), alive);
    if db.json {
        print!("{}", views::status_json(&value, &counts, applied, cp));
    } else {
        print!("{}", views::status_text(&line, &counts, applied, cp));
    }
    ExitCode::SUCCESS
}

fn simulate(
    nodes: usize,
    seed: u64,
    faults: &str,
    loss: f64,
    switch_size: usize,
    check: Option<bool>,
    (state_interval, instr_loss): (u64, f64),
) -> ExitCode {
    let faults = match cma::sim::Faults::parse(faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cma simulate: {e}");
            return ExitCode::from(2);
        }
    };
    if !(0.0..1.0).contains(&loss) || switch_size == 0 || switch_size > 250 {
        eprintln!("cma simulate: --loss must be in [0, 1) and --switch-size in 1..=250");
        return ExitCode::from(2);
    }
    if !(0.0..1.0).contains(&instr_loss) || (instr_loss > 0.0 && state_interval == 0) {
        eprintln!(
            "cma simulate: --instr-loss must be in [0, 1), and needs --state-interval (audits)"
        );
        return ExitCode::from(2);
    }
    let mut cfg = cma::sim::SimConfig::new(nodes, seed);
    cfg.faults = faults;
    cfg.loss = loss;
    cfg.switch_size = switch_size;
    cfg.check_invariants = check.unwrap_or(nodes <= 100_000);
    cfg.state_interval_ms = state_interval * 1000;
    cfg.instr_loss = instr_loss;
    let wall = std::time::Instant::now();
    let report = cma::sim::run(cfg);
    print!("{}", report.summary());
    println!(
        "simulated {} nodes, seed {seed}: {} events in {:.1} s wall",
        nodes,
        report.sim_events,
        wall.elapsed().as_secs_f64()
    );
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn wal(command: WalCommand) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match command {
        WalCommand::Verify { dir, json } => {
            cma::wal_tools::verify(&dir, json, &mut out).map(|v| match v {
                Verdict::Corrupt => ExitCode::FAILURE,
                Verdict::Clean | Verdict::TornTail => ExitCode::SUCCESS,
            })
        }
        WalCommand::Dump { dir, from, decode } => {
            cma::wal_tools::dump(&dir, from, decode, &mut out).map(|_| ExitCode::SUCCESS)
        }
        WalCommand::CrashChild {
            dir,
            segment_size,
            seconds,
        } => {
            cma::wal_tools::crash_child(&dir, segment_size, Duration::from_secs(seconds), &mut out)
                .map(|_| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("cma wal: {e}");
        ExitCode::FAILURE
    })
}

fn decode(hex: Vec<String>, pcap: Option<PathBuf>, text: bool, keys: Option<PathBuf>) -> ExitCode {
    let opener = match keys.map(|d| cma::crypt::DirOpener::load(&d)).transpose() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cma decode: keys: {e}");
            return ExitCode::from(2);
        }
    };
    let input = match (pcap, hex.is_empty()) {
        (Some(path), _) => match std::fs::read(&path) {
            Ok(data) => DecodeInput::Pcap(data),
            Err(e) => {
                eprintln!("cma decode: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, false) => DecodeInput::Hex(hex),
        (None, true) => {
            let mut lines = Vec::new();
            let stdin = std::io::stdin();
            let mut buf = String::new();
            if let Err(e) = stdin.lock().read_to_string(&mut buf) {
                eprintln!("cma decode: cannot read stdin: {e}");
                return ExitCode::from(2);
            }
            for line in buf.as_bytes().lines() {
                lines.push(line.unwrap_or_default());
            }
            DecodeInput::Hex(lines)
        }
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let opener = opener.as_ref().map(|o| o as &dyn cma::classify::Opener);
    match run_decode(input, text, opener, &mut stdout.lock(), &mut stderr.lock()) {
        Ok(Ok(stats)) if stats.accepted > 0 => ExitCode::SUCCESS,
        Ok(Ok(stats)) => {
            eprintln!(
                "cma decode: nothing decoded ({} FrameSets, all dropped; {} inputs skipped)",
                stats.framesets, stats.skipped
            );
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("cma decode: {e}");
            ExitCode::FAILURE
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cma decode: {e}");
            ExitCode::FAILURE
        }
    }
}
