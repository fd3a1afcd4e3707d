//! Changes are carried through: a request that may change something runs in a task of its
//! own, which goes on when its client goes (within a bound).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// A request that may change something is served to its end, answered and recorded, whether
/// or not its client waits for the answer: a client gone midway (a timeout, a reset) would
/// otherwise stop its change at whatever await it had reached, a transaction half begun or
/// committed unanswered. (Its retry with the same `X-Client-Token` gets the job it made.)
/// At most [`MAX_ORPHANED_CHANGES`] go on without their clients at once: beyond, one whose
/// client goes is stopped, as before, so that clients that send and go cannot pile up work
/// past `--max-connections`.
///
/// An agent's lease is not: it waits (a long poll) for tasks to lease to its caller, and
/// one whose caller went away must lease nothing.
pub async fn carried_through(request: Request, next: middleware::Next) -> Response {
    let safe = matches!(
        request.method(),
        &axum::http::Method::GET | &axum::http::Method::HEAD
    );
    let long_poll = request.uri().path().ends_with("/lease");
    if safe || long_poll {
        return next.run(request).await;
    }
    let state = Arc::new(AtomicU8::new(RUNNING));
    let ran = state.clone();
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        if ran.swap(DONE, Ordering::AcqRel) == ORPHANED {
            ORPHANS.fetch_sub(1, Ordering::AcqRel);
        }
        response
    });
    let guard = Orphaning {
        state,
        task: task.abort_handle(),
    };
    let answer = match task.await {
        Ok(response) => response,
        Err(e) => {
            ApiError::Internal(anyhow::anyhow!("a request's task failed: {e}")).into_response()
        }
    };
    drop(guard);
    answer
}

/// Changes at most carried on at once after their clients went.
pub const MAX_ORPHANED_CHANGES: usize = 256;
static ORPHANS: AtomicUsize = AtomicUsize::new(0);
const RUNNING: u8 = 0;
const ORPHANED: u8 = 1;
const DONE: u8 = 2;

/// A carried request's task while its client waits; dropped unanswered (the client went),
/// the task goes on alone, or is stopped when too many already do.
struct Orphaning {
    state: Arc<AtomicU8>,
    task: tokio::task::AbortHandle,
}

impl Drop for Orphaning {
    fn drop(&mut self) {
        let orphaned = self
            .state
            .compare_exchange(RUNNING, ORPHANED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !orphaned {
            return;
        }
        if ORPHANS.fetch_add(1, Ordering::AcqRel) >= MAX_ORPHANED_CHANGES {
            // Whoever moves it from orphaned to done counts it out: here, or its task.
            if self
                .state
                .compare_exchange(ORPHANED, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                ORPHANS.fetch_sub(1, Ordering::AcqRel);
                self.task.abort();
            }
        }
    }
}
