//! With the `cuda` feature, compiles the fused kernels of `src/model/candle/kernels.cu`
//! to PTX (loaded at run time by `src/model/candle/cuda.rs`). Needs `nvcc` on PATH, as
//! candle's own CUDA kernels do. Without the feature there is nothing to build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let source = "src/model/candle/kernels.cu";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("rerank_kernels.ptx");
    // PTX for the oldest GPU asked for; the driver compiles it for the one it runs on.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let status = Command::new("nvcc")
        .args([
            "--ptx",
            "-O3",
            &format!("-arch=compute_{cap}"),
            source,
            "-o",
        ])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("nvcc failed ({s}) on {source}"),
        Err(e) => panic!(
            "the `cuda` feature needs nvcc (the CUDA toolkit) on PATH: {e}; see bench/build-cuda.sh"
        ),
    }
}
