//! litejobs: a self-hosted, wire-compatible implementation of the ModelArts Lite Server job
//! API, with its CLI client and node agent.
#![forbid(unsafe_code)]

pub mod domain;
pub mod sign;
pub mod store;
pub mod wire;
pub mod http;
pub mod iam;
pub mod templates;
pub mod config;
pub mod serve;
pub mod worker;
pub mod client;
pub mod cli;
pub mod bench;
pub mod agent;
pub mod secrets;
