//! The `cma` command line: parses arguments and calls the library.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cma::decode::{DecodeInput, run_decode};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode { hex, pcap, text } => decode(hex, pcap, text),
    }
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
