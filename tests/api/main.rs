//! The API test binary: every test starts the real server on a random loopback port and
//! talks HTTP to it, on SQLite and on PostgreSQL.

#[allow(dead_code)]
mod helpers;

mod agent;
mod auth;
mod bench;
mod cli;
mod crash;
mod errors;
mod jobs;
mod readme;
mod replicas;
mod store;
