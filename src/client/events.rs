//! Server-Sent Events as the client reads them (the live watch).

use super::ClientError;

/// Longest silence of an event stream before it is taken for dead.
pub const STREAM_SILENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub event: String,
    pub id: String,
    pub data: String,
}

pub(super) type SseStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// An open stream of Server-Sent Events.
pub struct EventStream {
    pub(super) inner: SseStream,
}

impl EventStream {
    /// The next event; `None` when the stream ended (or fell silent for
    /// [`STREAM_SILENCE`]): reconnect with the last id to go on.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        use futures::StreamExt;
        match tokio::time::timeout(STREAM_SILENCE, self.inner.next()).await {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(Ok(e))) => Ok(Some(StreamEvent {
                event: e.event,
                id: e.id,
                data: e.data,
            })),
            Ok(Some(Err(eventsource_stream::EventStreamError::Transport(e)))) => Err(e.into()),
            Ok(Some(Err(e))) => Err(ClientError::Decode {
                status: 200,
                detail: e.to_string(),
            }),
        }
    }
}
