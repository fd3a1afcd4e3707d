//! The `request` span: every log line a request causes carries the request's id in a span
//! named `request` (in JSON, the `span` object), and an exported trace holds one span per
//! request.
//!
//! Most requests log nothing, so the span of a log line is made when the line is written,
//! from the id the request-id middleware keeps in [`REQUEST_ID`]: a span made, entered and
//! closed for every request cost about a microsecond of each (measured on a list request),
//! for lines that are seldom written. Only when spans are exported (`--otlp-endpoint`) does
//! every request get its span up front, with the fields a trace shows.
//!
//! The line's span is made through the process's global subscriber, the one `serve`
//! installs, while that subscriber writes the line. A subscriber set for one thread (which
//! nothing here does) refuses to make a span while it writes, and the line is then written
//! without it.

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::error::REQUEST_ID;

/// The span of a whole request when spans are exported; otherwise none (see the module
/// comment).
pub(super) fn request_span(id: &str, method: &axum::http::Method, route: &str) -> tracing::Span {
    if crate::telemetry::exporting() {
        tracing::info_span!(
            "request",
            request_id = %id,
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    }
}

/// The span a log line written inside a request is shown in.
fn line_span(id: &str) -> tracing::Span {
    tracing::info_span!("request", request_id = %id)
}

/// An event format that writes a line caused by a request (one logged in no span, while a
/// request is being served on this task) inside that request's span, as if the request had
/// been running in it; other lines as `F` writes them.
pub struct RequestSpans<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for RequestSpans<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let in_no_span = event.is_contextual() && ctx.lookup_current().is_none();
        let request = if in_no_span {
            REQUEST_ID.try_with(|id| line_span(id)).ok()
        } else {
            None
        };
        match request {
            Some(span) => {
                let _in_request = span.enter();
                self.0.format_event(ctx, writer, event)
            }
            None => self.0.format_event(ctx, writer, event),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, OnceLock};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The lines written so far that hold `marker`.
        fn lines(&self, marker: &str) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| l.contains(marker))
                .map(str::to_string)
                .collect()
        }
    }

    /// The process's subscriber, as `serve` installs it (the global one), writing JSON to one
    /// buffer and text to the other.
    fn logs() -> &'static (Captured, Captured) {
        static LOGS: OnceLock<(Captured, Captured)> = OnceLock::new();
        LOGS.get_or_init(|| {
            let (json, text) = (Captured::default(), Captured::default());
            let (to_json, to_text) = (json.clone(), text.clone());
            let subscriber = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(move || to_json.clone())
                        .json()
                        .map_event_format(RequestSpans),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(move || to_text.clone())
                        .map_event_format(RequestSpans),
                );
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            (json, text)
        })
    }

    /// Logs a line inside a request, one in a span of its own inside the request, and one
    /// outside, each holding `marker`.
    async fn log_three(marker: &str) {
        logs();
        REQUEST_ID
            .scope("abc123".to_string(), async {
                tracing::warn!("{marker} inside");
                tracing::info_span!("own", n = 1).in_scope(|| tracing::warn!("{marker} own"));
            })
            .await;
        tracing::warn!("{marker} outside");
    }

    #[tokio::test]
    async fn a_line_inside_a_request_is_written_in_its_span() {
        log_three("json-lines").await;
        let lines: Vec<serde_json::Value> = logs()
            .0
            .lines("json-lines")
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["span"]["name"], "request", "{}", lines[0]);
        assert_eq!(lines[0]["span"]["request_id"], "abc123");
        assert_eq!(lines[0]["spans"].as_array().map(Vec::len), Some(1));
        assert_eq!(lines[1]["span"]["name"], "own", "{}", lines[1]);
        assert!(lines[2].get("span").is_none(), "{}", lines[2]);
    }

    #[tokio::test]
    async fn text_lines_name_the_request_span_too() {
        log_three("text-lines").await;
        let lines = logs().1.lines("text-lines");
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains(" request{request_id=abc123}: "),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains(" own{n=1}: "), "{}", lines[1]);
        assert!(!lines[2].contains("request{"), "{}", lines[2]);
    }
}
