//! Running litejobs for tests and the benchmark: scratch PostgreSQL databases
//! ([`ScratchDatabase`]) and `litejobs serve` as a child process ([`ServerProcess`]). The
//! store's tests, the API tests and `litejobs bench` all use these.

mod pg;
mod server;

pub use pg::{pg_admin_url, test_database, uncommitted_job_event, ScratchDatabase};
pub use server::ServerProcess;
