//! litejobs: a self-hosted, wire-compatible implementation of the ModelArts Lite Server job
//! API, with its CLI client and node agent.
#![forbid(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod emulator;
pub mod fleet;
pub mod http;
pub mod iam;
pub mod metrics;
pub mod secrets;
pub mod serve;
pub mod sign;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod testkit;
pub mod watch;
pub mod wire;
pub mod worker;
