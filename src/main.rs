//! The `litejobs` binary: parses the command line and hands it to [`litejobs::cli`].
#![forbid(unsafe_code)]

/// mimalloc: the many small, short-lived allocations of a request (buffers, rows, JSON)
/// cost less there than in the system allocator. Built without transparent huge pages
/// (`no_thp`): with them, each thread's heap held whole 2 MiB pages, 10-20 MiB more at
/// rest, for no measurable speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = litejobs::cli::Cli::from_command_line();
    match litejobs::cli::run(cli).await {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("litejobs: {}", litejobs::cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
