//! `cma bench`: the whole-system benchmarks' command line (arguments,
//! checks, output files); the benchmarks themselves are this module's
//! siblings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
/// `cma bench`'s commands.
pub enum BenchCommand {
    /// A boot storm: N of our agents start at once against `cma run` (its
    /// own process, defaults); joins/s until all are placed, the daemon's
    /// CPU per join and memory per node; then the same for a restart.
    Joins {
        /// Agents.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Simulated switches (0: one per 40 agents).
        #[arg(long, default_value_t = 0)]
        switches: usize,
        /// Directory for the daemon's temporary data.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Give up after this many seconds per phase.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Write the result as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// A STARTUP storm from forged source addresses (new hosts, spread
    /// over many /24s, never answering) against `cma run` (its own
    /// process, defaults): registrations held at most, time until all are
    /// forgotten, what one forged STARTUP draws, memory; then a real agent
    /// joins.
    Storm {
        /// Forged STARTUPs.
        #[arg(long, default_value_t = 100_000)]
        startups: usize,
        /// Source /24s (127.100.0.0/24 and up).
        #[arg(long, default_value_t = 400)]
        networks: usize,
        /// Seconds to send them over.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Forged addresses that keep listening, to count what they draw.
        #[arg(long, default_value_t = 256)]
        sample: usize,
        /// Directory for the daemon's temporary data.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Write the result as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Durable-ACK latency: closed loop, one report in flight per agent,
    /// against a daemon with its defaults, next to a one-page msync and an
    /// fdatasync on the same file system.
    Ack {
        /// Reports per agent.
        #[arg(long, default_value_t = 2000)]
        reports: usize,
        /// Runs, by agents reporting at once (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        agents: Vec<usize>,
        /// Directory for the daemon's temporary data and the reference
        /// files (its file system is the one measured).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Run each again under a flood of this many datagrams per second
        /// from one source (0: no flood), once per kind of --flood-kinds.
        #[arg(long, default_value_t = 0)]
        flood_rate: u64,
        /// What the floods send (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "bombs,garbage,sequenced,startups"
        )]
        flood_kinds: Vec<crate::bench::ack::FloodKind>,
        /// Measure everything this many times over and, under floods, judge
        /// the median of each round's flooded / unflooded p99 (this VM's
        /// disk latency swings within minutes: one round can mislead).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Under a flood, switch it on and off every 250 ms within each
        /// run and judge the reports sent while it was on against those
        /// sent while it was paused (the first 25 ms after a switch left
        /// out): the same daemon, disk and moment for both.
        #[arg(long)]
        interleave: bool,
        /// Write the result as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write an SVG plot to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// The whole daemon against a recvmmsg + sendmmsg loop answering every
    /// datagram: highest zero-loss rates, their ratio, and latency at 50 %
    /// and 90 % of the daemon's zero-loss rate.
    Pipeline {
        /// Seconds per measured point.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Generator agents (connections).
        #[arg(long, default_value_t = 64)]
        agents: usize,
        /// Lowest rate searched, datagrams/s.
        #[arg(long, default_value_t = 5_000)]
        min_rate: u64,
        /// Highest rate searched.
        #[arg(long, default_value_t = 400_000)]
        max_rate: u64,
        /// Binary-search steps per system.
        #[arg(long, default_value_t = 7)]
        steps: u32,
        /// Write the result as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write an SVG latency plot to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Run the daemon with `[decider] spin = true` (busy-polling log
        /// and decider threads).
        #[arg(long)]
        spin: bool,
        /// Percent of STARTUPs in the mix (the rest: JSDISCOVERY, HBDEAD).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
        startup_pct: u32,
        /// Percent of 1 KiB JSDISCOVERYs in the mix (0 and 0: HBDEAD only).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
        jsdiscovery_pct: u32,
    },
    /// What a checkpoint costs the decider thread: the whole state against
    /// the rows changed in an interval, for a simulated registry.
    Checkpoint {
        /// Registry size.
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
        /// Reports in the interval between two checkpoints.
        #[arg(long, default_value_t = 50)]
        reports: usize,
        /// Write the result as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// A sendmmsg generator against (a) a bare recvmmsg discard loop and
    /// (b) the io loop + ring buffer + classify, in one run.
    Recv {
        /// Seconds per phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Offered datagrams per second; 0 sends flat out.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Datagram size in bytes (an HBDEAD with REQID, padded; 95 or >= 100).
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Seconds of idle CPU measurement after the phases.
        #[arg(long, default_value_t = 3.0)]
        idle: f64,
        /// Do not pin threads (generator on CPU 0, receivers on CPU 1).
        #[arg(long)]
        no_pin: bool,
        /// One datagram in this many is --large-size bytes (0: none), past
        /// the 2 KB ring slot: the spill path.
        #[arg(long, default_value_t = 0)]
        large_every: usize,
        /// Bytes of those large datagrams (2,049 ..= 65,507).
        #[arg(long, default_value_t = 20_000)]
        large_size: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one of `cma bench`'s commands.
///
/// One `match` arm per benchmark, each printing its own result.
pub fn bench(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Joins {
            nodes,
            switches,
            dir,
            timeout,
            json,
        } => {
            use crate::bench::joins as bj;
            if nodes == 0 || nodes > 1_000_000 {
                eprintln!("cma bench joins: need 1..=1000000 agents");
                return ExitCode::from(2);
            }
            let cfg = bj::JoinsBenchConfig {
                nodes,
                switches: if switches == 0 {
                    nodes.div_ceil(40)
                } else {
                    switches
                },
                dir,
                timeout_s: timeout,
                exe: None,
            };
            match report(
                "joins",
                bj::run(&cfg),
                bj::render,
                bj::to_json,
                json.as_deref(),
            ) {
                Some(_) => ExitCode::SUCCESS,
                None => ExitCode::FAILURE,
            }
        }
        BenchCommand::Storm {
            startups,
            networks,
            seconds,
            sample,
            dir,
            timeout,
            json,
        } => {
            use crate::bench::storm as bs;
            let cfg = bs::StormBenchConfig {
                startups,
                networks,
                seconds,
                sample,
                dir,
                timeout_s: timeout,
                exe: None,
            };
            match report(
                "storm",
                bs::run(&cfg),
                bs::render,
                bs::to_json,
                json.as_deref(),
            ) {
                Some(r) if r.real_joined => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        BenchCommand::Ack {
            reports,
            agents,
            dir,
            flood_rate,
            flood_kinds,
            rounds,
            interleave,
            json,
            svg,
        } => {
            use crate::bench::ack as ba;
            if rounds == 0 {
                eprintln!("cma bench ack: need --rounds > 0");
                return ExitCode::from(2);
            }
            if reports == 0 || agents.is_empty() || agents.iter().any(|a| *a == 0 || *a > 1024) {
                eprintln!("cma bench ack: need reports > 0 and 1..=1024 agents per run");
                return ExitCode::from(2);
            }
            let cfg = ba::AckBenchConfig {
                reports,
                agents,
                dir,
                flood_rate,
                flood_kinds,
                interleave,
            };
            let mut all = Vec::new();
            for k in 0..rounds {
                let r = match ba::run(&cfg) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("cma bench ack: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if rounds > 1 {
                    println!("round {} of {rounds}", k + 1);
                }
                print!("{}", ba::render(&cfg, &r));
                all.push(r);
            }
            if rounds > 1 {
                print!("{}", ba::render_rounds(&all));
            }
            let r = &all[0];
            let j = if rounds > 1 {
                serde_json::json!({
                    "rounds": all.iter().map(|r| ba::to_json(&cfg, r)).collect::<Vec<_>>(),
                    "flood_p99_ratio_medians": ba::flood_medians(&all).iter().map(|m| serde_json::json!({
                        "kind": m.kind.name(), "agents": m.agents, "bare_server": m.agents.is_none(),
                        "median": m.median, "ratios": m.ratios,
                    })).collect::<Vec<_>>(),
                })
            } else {
                ba::to_json(&cfg, r)
            };
            for (path, text) in [(&json, j.to_string()), (&svg, ba::to_svg(r))] {
                if let Some(p) = path
                    && let Err(e) = std::fs::write(p, text)
                {
                    eprintln!("cma bench ack: {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        BenchCommand::Pipeline {
            seconds,
            agents,
            min_rate,
            max_rate,
            steps,
            json,
            svg,
            spin,
            startup_pct,
            jsdiscovery_pct,
        } => {
            use crate::bench::pipeline as bp;
            if agents == 0
                || min_rate == 0
                || max_rate <= min_rate
                || seconds <= 0.0
                || startup_pct + jsdiscovery_pct > 100
            {
                eprintln!(
                    "cma bench pipeline: need agents > 0, seconds > 0, 0 < min-rate < max-rate, startup-pct + jsdiscovery-pct <= 100"
                );
                return ExitCode::from(2);
            }
            let cfg = bp::PipelineConfig {
                seconds,
                conns: agents,
                min_rate,
                max_rate,
                steps,
                json,
                svg,
                spin,
                startup_pct,
                jsdiscovery_pct,
            };
            match bp::run(&cfg) {
                Ok(r) => {
                    print!("{}", bp::render(&cfg, &r));
                    if let Some(p) = &cfg.json
                        && let Err(e) = std::fs::write(p, bp::to_json(&cfg, &r).to_string())
                    {
                        eprintln!("cma bench pipeline: {}: {e}", p.display());
                        return ExitCode::FAILURE;
                    }
                    if let Some(p) = &cfg.svg
                        && let Err(e) = std::fs::write(p, bp::to_svg(&r))
                    {
                        eprintln!("cma bench pipeline: {}: {e}", p.display());
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cma bench pipeline: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        BenchCommand::Checkpoint {
            nodes,
            reports,
            json,
        } => {
            use crate::bench::checkpoint as bc;
            if nodes == 0 || nodes > 16_000_000 {
                eprintln!("cma bench checkpoint: need 0 < nodes <= 16000000");
                return ExitCode::from(2);
            }
            let r = bc::run(&bc::CheckpointBenchConfig { nodes, reports });
            print!("{}", bc::render(&r));
            if let Some(p) = &json
                && let Err(e) = std::fs::write(p, bc::to_json(&r).to_string())
            {
                eprintln!("cma bench checkpoint: {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        BenchCommand::Recv {
            seconds,
            rate,
            size,
            idle,
            no_pin,
            large_every,
            large_size,
            json,
        } => {
            let config = crate::bench::recv::RecvBenchConfig {
                seconds,
                rate,
                size,
                idle_seconds: idle,
                pin: !no_pin,
                large_every,
                large_size,
                ..Default::default()
            };
            match crate::bench::recv::run(&config) {
                Ok(r) if json => {
                    println!("{}", crate::bench::recv::to_json(&config, &r));
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{}", crate::bench::recv::render(&config, &r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cma bench recv: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints a bench's result (and writes its JSON to `json`, if given), or
/// says why it failed: the result when all went well.
fn report<R>(
    name: &str,
    result: Result<R, String>,
    render: impl Fn(&R) -> String,
    to_json: impl Fn(&R) -> serde_json::Value,
    json: Option<&std::path::Path>,
) -> Option<R> {
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cma bench {name}: {e}");
            return None;
        }
    };
    print!("{}", render(&r));
    if let Some(p) = json
        && let Err(e) = std::fs::write(p, to_json(&r).to_string())
    {
        eprintln!("cma bench {name}: {}: {e}", p.display());
        return None;
    }
    Some(r)
}
