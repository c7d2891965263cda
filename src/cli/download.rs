//! `rerank download`: fetch a model into the standard Hugging Face cache,
//! where Python tools find it too (and where `--model ORG/NAME` looks first).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use rerank::hub::{self, DownloadProgress, HubConfig};

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Hugging Face model id (ORG/NAME).
    #[arg(env = "RERANK_MODEL", default_value = hub::DEFAULT_MODEL)]
    pub model: String,
    /// Branch, tag or commit hash.
    #[arg(long, env = "RERANK_REVISION", default_value = hub::DEFAULT_REVISION)]
    pub revision: String,
}

pub fn run(args: &DownloadArgs) -> Result<()> {
    if Path::new(&args.model).is_dir() {
        bail!(
            "{} is a local directory, not a hub model id: nothing to download (use it with --model {0})",
            args.model
        );
    }
    let hub = HubConfig::from_env()?;
    if hub.offline {
        bail!(
            "cannot download {}: HF_HUB_OFFLINE is set; unset it to download",
            args.model
        );
    }
    eprintln!(
        "downloading {} (revision {}) from {} into {}",
        args.model,
        args.revision,
        hub.endpoint,
        hub.cache_dir.display()
    );
    let files = hub::download(&args.model, &args.revision, &hub, &mut Progress::new())?;
    let dir = files.config.parent().unwrap_or(Path::new("."));
    eprintln!(
        "{} is ready: use --model {} (found in the cache from now on), or --model {}",
        args.model,
        args.model,
        dir.display()
    );
    // The snapshot directory alone on stdout, for scripts.
    println!("{}", dir.display());
    Ok(())
}

/// Download progress on stderr: a bar per file on a terminal, otherwise a
/// line when each file starts and ends.
pub struct Progress {
    tty: bool,
    current: Option<(String, ProgressBar)>,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            current: None,
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl DownloadProgress for Progress {
    fn start(&mut self, file: &str, size: u64) {
        if let Some((name, bar)) = &self.current {
            if name == file {
                // A restart or resume of the same file.
                bar.set_length(size);
                bar.set_position(0);
                return;
            }
        }
        let bar = if self.tty {
            let style = ProgressStyle::with_template(
                "{msg:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .expect("valid template")
            .progress_chars("=> ");
            ProgressBar::new(size)
                .with_style(style)
                .with_message(file.to_string())
        } else {
            eprintln!("  {file} ({})", HumanBytes(size));
            ProgressBar::hidden()
        };
        self.current = Some((file.to_string(), bar));
    }

    fn advance(&mut self, bytes: u64) {
        if let Some((_, bar)) = &self.current {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = &self.current {
            bar.finish();
        }
    }

    fn cached(&mut self, file: &str, path: &Path) {
        eprintln!("  {file}: already in the cache ({})", path.display());
    }
}
