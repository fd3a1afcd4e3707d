//! The API test binary: every test starts the real server on a random loopback port and
//! talks HTTP to it, on SQLite and on PostgreSQL.

#[allow(dead_code)]
mod helpers;

mod abuse;
mod agent;
mod audit;
mod auth;
mod bench;
mod cli;
mod console;
mod crash;
mod deploy;
mod emulator;
mod emulator_reset;
mod emulator_seed;
mod errors;
mod fleet;
mod jobs;
mod observe;
mod openapi;
mod overload;
mod properties;
mod readme;
mod replicas;
mod soak;
mod store;
mod tls;
mod watch;
