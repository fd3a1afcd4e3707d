//! What a failed call says: the API's error, or why the service could not be reached.

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status} {error_code}: {error_msg} (request id {request_id})")]
    Api {
        status: u16,
        error_code: String,
        error_msg: String,
        request_id: String,
    },
    #[error("cannot reach the service: {}", with_cause(.0))]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer ({status}): {detail}")]
    Decode { status: u16, detail: String },
    #[error("bad endpoint: {0}")]
    Endpoint(String),
}

/// A transport error with the cause it came from (an untrusted certificate, a refused
/// connection), which its own text leaves out.
fn with_cause(e: &reqwest::Error) -> String {
    let (text, cause) = (e.to_string(), root_cause(e).to_string());
    if text.contains(&cause) {
        text
    } else {
        format!("{text}: {cause}")
    }
}

/// The first cause of `e`: what its own text names only in general.
pub fn root_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    root
}

impl ClientError {
    /// True for a failure that may pass if the call is made again later: the service could
    /// not be reached, was too busy (408, 429) or failed (5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Api { status, .. } | Self::Decode { status, .. } => {
                matches!(status, 408 | 429 | 500..)
            }
            Self::Endpoint(_) => false,
        }
    }
}
