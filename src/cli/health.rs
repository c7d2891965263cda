//! `rerank health`: asks a running `rerank serve` whether it is healthy and
//! exits 0 or 1, so a container's `HEALTHCHECK` needs no curl in the image.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Port of the server on this host (the server's own `RERANK_PORT`).
    #[arg(long, env = "RERANK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Which probe to ask.
    #[arg(long, value_enum, default_value_t = Probe::Health)]
    pub probe: Probe,
    /// The whole URL to ask instead (another host, a path behind a proxy).
    #[arg(long, conflicts_with_all = ["port", "probe"])]
    pub url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    /// `/health`: the model computes and the server is not shutting down.
    Health,
    /// `/live`: the model thread is alive and not stuck.
    Live,
    /// `/ready`: live, computing, not draining, the queue under its threshold.
    Ready,
}

pub fn run(args: &HealthArgs) -> Result<()> {
    let url = args.url.clone().unwrap_or_else(|| {
        let path = match args.probe {
            Probe::Health => "health",
            Probe::Live => "live",
            Probe::Ready => "ready",
        };
        format!("http://127.0.0.1:{}/{path}", args.port)
    });
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let answer = ureq::get(&url)
        .timeout(Duration::from_secs_f64(args.timeout))
        .call();
    match answer {
        Ok(response) => {
            println!(
                "{url}: {} {}",
                response.status(),
                response.into_string().unwrap_or_default()
            );
            Ok(())
        }
        Err(ureq::Error::Status(code, response)) => {
            let body = response.into_string().unwrap_or_default();
            bail!("{url}: {code} {body}")
        }
        Err(ureq::Error::Transport(e)) => {
            bail!(
                "{url}: no answer ({}); is `rerank serve` running on this port?",
                rerank::hub::transport_reason(&e)
            )
        }
    }
}
