//! The `rerank` binary: parses flags and calls the library.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Cross-encoder reranking for BAAI/bge-reranker-v2-m3 and its family.
#[derive(Debug, Parser)]
#[command(name = "rerank", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rank passages for a query and print them best first, with score bars.
    Rank(cli::rank::RankArgs),
    /// Score (query, passage) pairs from a JSONL file, in input order.
    Score(cli::score::ScoreArgs),
    /// Rerank a first-stage TREC run (queries + corpus in TSV or BEIR JSONL) and write
    /// the reranked TREC run to standard output.
    Trec(cli::trec::TrecArgs),
    /// Evaluate TREC runs against qrels: nDCG@k, MRR, Recall@k, P@k, MAP as trec_eval
    /// computes them, with a paired t-test against the first run.
    Eval(cli::eval::EvalArgs),
    /// Run the two demos of the deployment guide (AI trends; China's capital).
    Demo(cli::demo::DemoArgs),
    /// Download a model into the Hugging Face cache (HF_HOME, HF_ENDPOINT, HF_TOKEN).
    Download(cli::download::DownloadArgs),
    /// Benchmark named workloads (wall time, pairs/s, tokens/s, GFLOP/s, peak RSS).
    Bench(cli::bench::BenchArgs),
    /// Serve the rerank HTTP APIs (text-embeddings-inference /rerank, Cohere/Jina /v1/rerank, NVIDIA /v1/ranking).
    #[cfg(feature = "server")]
    Serve(cli::serve::ServeArgs),
    /// Ask a running server's /health (or /live, /ready) and exit 0 if it answers 200, else 1
    /// (for a container HEALTHCHECK).
    Health(cli::health::HealthArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command()
        .after_long_help(kernel_switches_help())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match &cli.command {
        Command::Rank(args) => cli::rank::run(args),
        Command::Score(args) => cli::score::run(args),
        Command::Trec(args) => cli::trec::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Download(args) => cli::download::run(args),
        Command::Bench(args) => cli::bench::run(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => cli::serve::run(args),
        Command::Health(args) => cli::health::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The CPU kernel switches (read from the environment by the library, not
/// flags), for `rerank --help`.
fn kernel_switches_help() -> String {
    let mut text = String::from(
        "CPU kernel switches (environment; an unknown value is an error; the kernels in use are \
         printed by `rerank bench` and reported by /info):\n",
    );
    for (name, values, meaning) in rerank::model::kernels::ENV_SWITCHES {
        text.push_str(&format!("  {name}={values}\n      {meaning}\n"));
    }
    text
}
