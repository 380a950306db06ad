//! The `cma` command line: parses arguments and calls the library.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::time::Duration;

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
    },
    /// Whole-system benchmarks (loopback only).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode { hex, pcap, text } => decode(hex, pcap, text),
        Command::Wal { command } => wal(command),
        Command::Bench { command } => bench(command),
        Command::Simulate {
            nodes,
            seed,
            faults,
            loss,
            switch_size,
            check,
        } => simulate(nodes, seed, &faults, loss, switch_size, check),
    }
}

fn simulate(
    nodes: usize,
    seed: u64,
    faults: &str,
    loss: f64,
    switch_size: usize,
    check: Option<bool>,
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
    let mut cfg = cma::sim::SimConfig::new(nodes, seed);
    cfg.faults = faults;
    cfg.loss = loss;
    cfg.switch_size = switch_size;
    cfg.check_invariants = check.unwrap_or(nodes <= 100_000);
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

fn bench(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Recv {
            seconds,
            rate,
            size,
            idle,
            no_pin,
            json,
        } => {
            let config = cma::engine::bench_recv::RecvBenchConfig {
                seconds,
                rate,
                size,
                idle_seconds: idle,
                pin: !no_pin,
                ..Default::default()
            };
            match cma::engine::bench_recv::run(&config) {
                Ok(r) if json => {
                    println!("{}", cma::engine::bench_recv::to_json(&config, &r));
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{}", cma::engine::bench_recv::render(&config, &r));
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

fn decode(hex: Vec<String>, pcap: Option<PathBuf>, text: bool) -> ExitCode {
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
    match run_decode(input, text, &mut stdout.lock(), &mut stderr.lock()) {
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
