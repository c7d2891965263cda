//! The integration tests, as one test binary (ripgrep's layout): one link of
//! the library and its dependencies instead of one per file. Filter by module,
//! e.g. `cargo test --test it -- precision:: server::`.

mod bert;
mod cache;
mod chunk;
mod cli;
mod cli_hub;
mod cli_trec;
mod engine;
mod eval;
mod fixtures;
mod hub;
mod load_errors;
mod precision;
mod real_bert;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod server_cache;
#[cfg(feature = "server")]
mod server_chunk;
#[cfg(feature = "server")]
mod server_clients;
#[cfg(feature = "server")]
mod server_common;
#[cfg(feature = "server")]
mod server_load;
#[cfg(feature = "server")]
mod server_socket;
