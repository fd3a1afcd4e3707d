//! What a failed call says: the API's error, or why the service could not be reached.

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status} {error_code}: {error_msg}{}", request_id_text(request_id))]
    Api {
        status: u16,
        error_code: String,
        error_msg: String,
        request_id: String,
    },
    #[error("{}", transport_text(.0))]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer ({status}): {detail}")]
    Decode { status: u16, detail: String },
    #[error("bad endpoint: {0}")]
    Endpoint(String),
}

/// ` (request id …)`, when the answer had one (a proxy's answer has none).
fn request_id_text(request_id: &str) -> String {
    if request_id.is_empty() {
        String::new()
    } else {
        format!(" (request id {request_id})")
    }
}

/// What a transport error says: a request that could not be made (a header value no
/// request may carry) is the caller's, not the service's being out of reach.
fn transport_text(e: &reqwest::Error) -> String {
    if e.is_builder() {
        format!("cannot make the request: {}", with_cause(e))
    } else {
        format!("cannot reach the service: {}", with_cause(e))
    }
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

/// True when the service's certificate (or the client's, by the service) was refused.
fn refused_certificate(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // An I/O error's `source` skips the error it wraps (its source's source): that one
        // is the next link.
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    false
}

impl ClientError {
    /// True for a failure that may pass if the call is made again later: the service could
    /// not be reached, was too busy (408, 429) or failed (5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            // Not a request that could not be made (a header value no request may carry),
            // nor a certificate the client does not trust: trying again changes neither.
            Self::Transport(e) => !e.is_builder() && !refused_certificate(e),
            Self::Api { status, .. } | Self::Decode { status, .. } => {
                matches!(status, 408 | 429 | 500..)
            }
            Self::Endpoint(_) => false,
        }
    }
}
