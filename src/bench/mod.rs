//! `litejobs bench`: fills a database with a realistic data set and measures the API.

pub mod floor;

/// `litejobs bench` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the benchmark is not available in this build")
}
