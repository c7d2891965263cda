//! The `rerank` binary: parses flags and calls the library.

mod cli;

use clap::{Parser, Subcommand};

/// Cross-encoder reranking for BAAI/bge-reranker-v2-m3 and its family.
#[derive(Debug, Parser)]
#[command(name = "rerank", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Score (query, passage) pairs from a JSONL file, in input order.
    Score(cli::score::ScoreArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Score(args) => cli::score::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
