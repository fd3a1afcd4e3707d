//! What handlers take from a request, answered in the API's error format when it is not
//! right: the query's pairs, JSON bodies, path parameters, and bodies read within their size,
//! time and memory limits (which large answers share while they are sent).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// Largest request body accepted (the real gateway's limit for signed bodies).
pub const MAX_BODY_BYTES: usize = 12 * 1024 * 1024;

/// Decodes an API request's query string into pairs. A `+` stays a `+`, as in the
/// signature's canonical query (`sign::canonical_query`): what a handler acts on is what was
/// signed (a space is `%20`). A key or value whose bytes, once decoded, are not UTF-8 is a
/// client's mistake: it is refused rather than read with replacement characters, which
/// would match other text.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    decode_pairs(raw, false)
}

/// Decodes a browser form's query string into pairs: a `+` is a space, as in any form
/// encoding (the console's pages, whose queries are not signed).
pub fn form_query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    decode_pairs(raw, true)
}

fn decode_pairs(raw: Option<&str>, plus_is_space: bool) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &[u8]| {
        let spaced: std::borrow::Cow<'_, [u8]> = if plus_is_space {
            part.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect()
        } else {
            part.into()
        };
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).map_err(|_| {
            ApiError::Invalid(format!(
                "invalid query: {} is not UTF-8 once decoded",
                String::from_utf8_lossy(part)
            ))
        })
    };
    raw.unwrap_or("")
        .as_bytes()
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// Parses a JSON body, answering a client's mistake as a 400 that says what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::Invalid("the request body is empty".into())),
        // Every body is an object; serde would read a struct from an array of its fields.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::Invalid(
                "invalid request body: it must be a JSON object".into(),
            ))
        }
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Invalid(format!("invalid request body: {e}")))
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        Self::Invalid(format!("invalid path: {}", e.body_text()))
    }
}

/// `axum::extract::Path` whose failures are answered in the API's error format.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Answers that may grow large (a job's detail: its items and every task's message) built at
/// once, per core: each takes its memory before its size is known, so that many requests
/// for large ones may not all build theirs together.
const BUILDS_PER_CORE: usize = 4;

/// Answers at least this large hold their share of the memory budget until sent.
const LARGE_ANSWER: usize = 256 * 1024;
/// Pieces a large answer is handed to its connection in: the next is taken once the ones
/// before are written, so that an answer the client does not read keeps its share.
const ANSWER_PIECE: usize = 64 * 1024;

/// How request bodies are read: each within a time, all of them together (with the large
/// answers being sent) within a memory budget, so that a flood of slow or large requests can
/// exhaust neither the server's memory nor its patience.
#[derive(Clone)]
pub struct BodyLimits {
    /// A body must arrive whole within this time.
    pub timeout: Duration,
    /// KiB of bodies being read or held, one permit each.
    budget: Arc<Semaphore>,
    /// The budget's whole size, in permits.
    total: u32,
    /// Answers that may grow large (a job's detail) being built at once.
    builds: Arc<Semaphore>,
}

/// A body's share of the memory budget, given back when dropped.
#[derive(Debug)]
pub struct BodyPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// Permits (KiB) for `bytes` bytes.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl BodyLimits {
    /// Bodies read within `timeout`, holding `max_memory` bytes at once at most (at least
    /// one body of [`MAX_BODY_BYTES`]).
    pub fn new(timeout: Duration, max_memory: usize) -> Self {
        let total = kib(max_memory.max(MAX_BODY_BYTES));
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            timeout,
            budget: Arc::new(Semaphore::new(total as usize)),
            total,
            builds: Arc::new(Semaphore::new(BUILDS_PER_CORE * cores)),
        }
    }

    /// Takes `bytes` more of the budget before `deadline`.
    async fn reserve(
        &self,
        bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if bytes == 0 {
            return Ok(None);
        }
        let wanted = self.budget.clone().acquire_many_owned(kib(bytes));
        match tokio::time::timeout_at(deadline, wanted).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(ApiError::Overloaded(
                "request bodies being read take all the memory set aside for them",
            )),
        }
    }

    /// A turn to build an answer that may grow large; others wait for theirs.
    pub async fn building(&self) -> Option<OwnedSemaphorePermit> {
        self.builds.clone().acquire_owned().await.ok()
    }

    /// `response`, holding its share of the memory budget (with the request bodies) until
    /// it is sent or its connection closes, when it is large (a share of the whole budget at
    /// most). A read's answer that cannot get its share at once is a 503 instead (waiting,
    /// it would hold its memory all the same); the answer of a change (`safe` false) is never
    /// replaced, the change being made: it waits for its share.
    pub async fn hold_for_answer(&self, response: Response, safe: bool) -> Response {
        let size = response.body().size_hint().exact();
        let Some(size) = size
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| *s >= LARGE_ANSWER)
        else {
            return response;
        };
        let share = kib(size).min(self.total);
        let permit = if safe {
            self.budget.clone().try_acquire_many_owned(share).ok()
        } else {
            self.budget.clone().acquire_many_owned(share).await.ok()
        };
        let (parts, body) = response.into_parts();
        let Some(permit) = permit else {
            let mut busy =
                ApiError::Overloaded("answers being sent take all the memory set aside for them")
                    .into_response();
            // What the answer carried for the layers around (the audit's, the journal's)
            // stays, but for its own error code.
            let mut extensions = parts.extensions;
            extensions.extend(std::mem::take(busy.extensions_mut()));
            *busy.extensions_mut() = extensions;
            return busy;
        };
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(rest) => Response::from_parts(
                parts,
                Body::new(HeldAnswer {
                    rest,
                    _permit: permit,
                }),
            ),
            Err(e) => {
                ApiError::Internal(anyhow::anyhow!("cannot read an answer: {e}")).into_response()
            }
        }
    }
}

/// An answer handed out in pieces, holding its share of the memory budget until dropped.
struct HeldAnswer {
    rest: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl hyper::body::Body for HeldAnswer {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let piece = self.rest.len().min(ANSWER_PIECE);
        let piece = self.rest.split_to(piece);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// The least share of the memory budget a body takes as its first bytes arrive.
const BODY_FIRST_SHARE: usize = 4 * 1024;

/// Reads a body within `limits`: more than [`MAX_BODY_BYTES`] is refused (413, at once when
/// the length is declared), a body that does not arrive within the timeout is 408, and one
/// that cannot get its share of the memory budget in that time is 503. The share is taken
/// as the bytes arrive, doubling (never past the length declared), not for the length
/// declared up front: a client that declares megabytes and sends one byte holds 4 KiB. The
/// buffer is the share's size, no more. The permit holds the body's share until dropped.
pub async fn read_body(body: Body, limits: &BodyLimits) -> Result<(Bytes, BodyPermit), ApiError> {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    if declared > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge);
    }
    let mut permit: Option<OwnedSemaphorePermit> = None;
    // Bytes of the budget held, in whole KiB; the buffer's capacity.
    let mut reserved = 0;
    let mut buf = Vec::new();
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout(limits.timeout)),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(ApiError::Invalid(
                    "the request body could not be read".into(),
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buf.len() + data.len();
        if total > MAX_BODY_BYTES {
            return Err(ApiError::BodyTooLarge);
        }
        if total > reserved {
            let most = if declared >= total {
                declared
            } else {
                MAX_BODY_BYTES
            };
            let wanted = total
                .max(2 * reserved)
                .max(BODY_FIRST_SHARE)
                .min(most)
                .next_multiple_of(1024);
            let more = limits.reserve(wanted - reserved, deadline).await?;
            match (&mut permit, more) {
                (Some(held), Some(more)) => held.merge(more),
                (held, more) => *held = held.take().or(more),
            }
            reserved = wanted;
            buf.reserve_exact(wanted - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), BodyPermit(permit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_query_reads_a_plus_as_signed_and_a_form_query_as_a_space() {
        let raw = Some("name=a+b%2Bc%20d&x+y=1");
        let api = query_pairs(raw).map_err(|e| format!("{e:?}"));
        assert_eq!(
            api,
            Ok(vec![
                ("name".to_string(), "a+b+c d".to_string()),
                ("x+y".to_string(), "1".to_string())
            ])
        );
        let form = form_query_pairs(raw).map_err(|e| format!("{e:?}"));
        assert_eq!(
            form,
            Ok(vec![
                ("name".to_string(), "a b+c d".to_string()),
                ("x y".to_string(), "1".to_string())
            ])
        );
    }

    /// A body that declares `declared` bytes, sends one and then nothing more.
    struct Trickle {
        declared: u64,
        sent: bool,
    }

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            if self.sent {
                return std::task::Poll::Pending;
            }
            self.sent = true;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"{")))))
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            hyper::body::SizeHint::with_exact(self.declared)
        }
    }

    #[tokio::test]
    async fn a_body_s_share_follows_what_arrived() {
        let limits = BodyLimits::new(Duration::from_secs(5), MAX_BODY_BYTES);
        let held = |limits: &BodyLimits| limits.total as usize - limits.budget.available_permits();
        // Declared: its length, to the KiB.
        let (read, permit) = read_body(Body::from(vec![b'x'; 1_000_000]), &limits)
            .await
            .expect("read");
        assert_eq!(read.len(), 1_000_000);
        assert_eq!(held(&limits), kib(1_000_000) as usize);
        drop(permit);
        assert_eq!(held(&limits), 0);
        // Not declared (chunked): doubling as it comes, at most twice what came.
        let pieces = (0..100).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 10_000])));
        let (read, _permit) = read_body(Body::from_stream(futures::stream::iter(pieces)), &limits)
            .await
            .expect("read");
        assert_eq!(read.len(), 1_000_000);
        let share = held(&limits);
        assert!(
            share >= kib(1_000_000) as usize && share <= 2 * kib(1_000_000) as usize,
            "{share} KiB"
        );
    }

    #[tokio::test]
    async fn bodies_declared_large_but_not_sent_hold_no_budget_from_others() {
        let limits = BodyLimits::new(Duration::from_secs(5), MAX_BODY_BYTES);
        // Three bodies declaring the largest size together, each of one byte so far.
        let stalled: Vec<_> = (0..3)
            .map(|_| {
                let limits = limits.clone();
                tokio::spawn(async move {
                    let body = Body::new(Trickle {
                        declared: MAX_BODY_BYTES as u64,
                        sent: false,
                    });
                    read_body(body, &limits).await.map(|_| ())
                })
            })
            .collect();
        // Each holds the first share of its byte.
        let expected = (limits.total - 3 * kib(BODY_FIRST_SHARE)) as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while limits.budget.available_permits() != expected {
            assert!(
                std::time::Instant::now() < deadline,
                "never took their shares"
            );
            tokio::task::yield_now().await;
        }
        // A small body is read at once.
        let started = std::time::Instant::now();
        let (read, _permit) = read_body(Body::from("{}"), &limits).await.expect("read");
        assert_eq!(&read[..], b"{}");
        assert!(started.elapsed() < Duration::from_secs(1));
        for task in stalled {
            task.abort();
        }
    }

    /// A 2xx answer of `bytes` bytes.
    fn answer(bytes: usize) -> Response {
        Response::new(Body::from(vec![b'x'; bytes]))
    }

    #[tokio::test]
    async fn a_large_answer_waits_for_its_share_and_a_read_gives_up_at_once() {
        let limits = BodyLimits::new(Duration::from_millis(100), MAX_BODY_BYTES);
        // Everything held elsewhere.
        let all = limits
            .budget
            .clone()
            .acquire_many_owned(limits.total)
            .await
            .expect("the whole budget");
        // A small answer needs no share.
        let small = limits.hold_for_answer(answer(1024), true).await;
        assert_eq!(small.status(), 200);
        // A read's large answer gives up at once: 503.
        let started = std::time::Instant::now();
        let read = limits.hold_for_answer(answer(LARGE_ANSWER), true).await;
        assert_eq!(read.status(), 503);
        assert!(started.elapsed() < Duration::from_millis(100));
        // A change's answer waits until the share is free, then goes out whole.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(all);
        });
        let change = limits.hold_for_answer(answer(LARGE_ANSWER), false).await;
        assert_eq!(change.status(), 200);
        release.await.expect("released");
        let body = axum::body::to_bytes(change.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(body.len(), LARGE_ANSWER);
        // An answer larger than the whole budget takes all of it, rather than waiting
        // forever.
        let huge = limits
            .hold_for_answer(answer(MAX_BODY_BYTES + 1), true)
            .await;
        assert_eq!(huge.status(), 200);
        assert_eq!(limits.budget.available_permits(), 0);
        drop(huge);
        assert_eq!(limits.budget.available_permits(), limits.total as usize);
    }
}
