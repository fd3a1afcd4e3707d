//! The error answers of the error table (`error.rs`), each written once in the document's
//! `components/responses`, and the sets of them the operations refer to.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, PartialSchema};

/// An error answer of the error table: its name among the document's responses, status,
/// meaning, an example `(error_code, error_msg)`, and whether it carries `Retry-After`.
pub(super) struct ErrorAnswer {
    pub(super) name: &'static str,
    status: &'static str,
    description: &'static str,
    example: (&'static str, &'static str),
    retry: bool,
}

const INVALID: ErrorAnswer = ErrorAnswer {
    name: "InvalidValue",
    status: "400",
    description: "`ModelArts.0107`: a path, query or body value is invalid (the message says \
        which and why); nothing was changed.",
    example: (
        "ModelArts.0107",
        "status must be one of PROCESSING, FINISHED, DELETED",
    ),
    retry: false,
};

const UNAUTHENTICATED: ErrorAnswer = ErrorAnswer {
    name: "Unauthenticated",
    status: "401",
    description: "`APIG.0301`: no credentials, or wrong ones (unknown AK, bad signature, stale \
        `X-Sdk-Date`, unknown, expired or revoked token, wrong password); every failure \
        looks alike.",
    example: ("APIG.0301", crate::http::error::AUTH_FAILED_MSG),
    retry: false,
};

const FORBIDDEN: ErrorAnswer = ErrorAnswer {
    name: "Forbidden",
    status: "403",
    description: "`ModelArts.0105`: the project is not the caller's, or the caller's policies \
        do not grant the action.",
    example: (
        "ModelArts.0105",
        "Policy doesn't allow modelarts:devserverJob:create to be performed.",
    ),
    retry: false,
};

const NOT_FOUND: ErrorAnswer = ErrorAnswer {
    name: "NotFound",
    status: "404",
    description: "`ModelArts.0102`: no such resource in the project.",
    example: ("ModelArts.0102", "The job 8d3c2f8e does not exist."),
    retry: false,
};

const BODY_TIMEOUT: ErrorAnswer = ErrorAnswer {
    name: "BodyTimeout",
    status: "408",
    description: "`APIG.0201`: the body did not arrive in time.",
    example: (
        "APIG.0201",
        "Request timeout: the body did not arrive within 30 s.",
    ),
    retry: false,
};

const CONFLICT: ErrorAnswer = ErrorAnswer {
    name: "Conflict",
    status: "409",
    description: "`ModelArts.0103`: the change conflicts with what the resource holds (an \
        idempotency token reused with another body; a task no longer under this lease).",
    example: (
        "ModelArts.0103",
        "The X-Client-Token was used with another request body.",
    ),
    retry: false,
};

const BODY_TOO_LARGE: ErrorAnswer = ErrorAnswer {
    name: "BodyTooLarge",
    status: "413",
    description: "`APIG.0201`: the body exceeds 12 MB.",
    example: (
        "APIG.0201",
        "Request entity too large: the body exceeds 12 MB.",
    ),
    retry: false,
};

const THROTTLED: ErrorAnswer = ErrorAnswer {
    name: "Throttled",
    status: "429",
    description: "`APIG.0308`: the access key's rate limit was reached.",
    example: ("APIG.0308", "The throttling threshold has been reached."),
    retry: true,
};

const UNAVAILABLE: ErrorAnswer = ErrorAnswer {
    name: "Unavailable",
    status: "503",
    description: "`ModelArts.0013`: the database is unavailable, the server is at one of its \
        limits, or (`/ready`) it is not ready; the message says why. Try again after \
        `Retry-After`.",
    example: ("ModelArts.0013", "The service is temporarily unavailable."),
    retry: true,
};

const OTHER: ErrorAnswer = ErrorAnswer {
    name: "OtherError",
    status: "default",
    description: "Any other failure, in the error format: `APIG.0201` (414 URI over 32 KB, \
        431 too many headers or a head over 64 KiB) or `ModelArts.0010` (500, unexpected; \
        logged with its cause).",
    example: ("ModelArts.0010", "Internal error."),
    retry: false,
};

/// Every error answer, each written once in the document's `components/responses`.
pub(super) const ERROR_ANSWERS: [&ErrorAnswer; 10] = [
    &INVALID,
    &UNAUTHENTICATED,
    &FORBIDDEN,
    &NOT_FOUND,
    &BODY_TIMEOUT,
    &CONFLICT,
    &BODY_TOO_LARGE,
    &THROTTLED,
    &UNAVAILABLE,
    &OTHER,
];

impl ErrorAnswer {
    pub(super) fn response(&self) -> Response {
        let request_id = HeaderBuilder::new()
            .schema(String::schema())
            .description(Some("The request's id, as in the body."));
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .example(Some(serde_json::json!({
                "error_code": self.example.0,
                "error_msg": self.example.1,
                "request_id": "6e4bd0a4a1f84a1d9d3b7a5b0c2e8f11",
            })));
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .header("X-Request-Id", request_id.build())
            .content("application/json", content.build());
        if self.retry {
            let retry_after = HeaderBuilder::new()
                .schema(u64::schema())
                .description(Some("Seconds to wait before trying again."));
            response = response.header("Retry-After", retry_after.build());
        }
        response.build()
    }
}

/// References to the error answers `answers`, by status.
fn refer(answers: &[&ErrorAnswer]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|a| {
            (
                a.status.to_string(),
                RefOr::Ref(Ref::from_response_name(a.name)),
            )
        })
        .collect()
}

/// The errors of every call under `/v1/`: a bad value, authentication, permission, rate
/// limit, the database being unavailable, and any other.
pub struct ProjectErrors;

impl IntoResponses for ProjectErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[
            &INVALID,
            &UNAUTHENTICATED,
            &FORBIDDEN,
            &THROTTLED,
            &UNAVAILABLE,
            &OTHER,
        ])
    }
}

/// The errors of reading a request body.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[&BODY_TIMEOUT, &BODY_TOO_LARGE])
    }
}

/// 404 for an unknown job, template, service, server or output.
pub struct NotFound;

impl IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[&NOT_FOUND])
    }
}

/// 409 for a change that conflicts with the resource's state.
pub struct Conflict;

impl IntoResponses for Conflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[&CONFLICT])
    }
}

/// The errors of the service's own routes (`/health`, `/ready`, `/metrics`).
pub struct ServiceErrors;

impl IntoResponses for ServiceErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[&UNAVAILABLE, &OTHER])
    }
}

/// The errors of `POST /v3/auth/tokens`.
pub struct TokenErrors;

impl IntoResponses for TokenErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[&INVALID, &UNAUTHENTICATED, &FORBIDDEN, &UNAVAILABLE, &OTHER])
    }
}

/// The errors of `DELETE /v3/auth/tokens`.
pub struct RevokeErrors;

impl IntoResponses for RevokeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refer(&[&UNAUTHENTICATED, &FORBIDDEN, &UNAVAILABLE, &OTHER])
    }
}
