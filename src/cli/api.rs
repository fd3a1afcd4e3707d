//! The calls the client commands make: one signed request through [`Client::send`], whose
//! raw body is kept for `--output json` and decoded for tables.

use reqwest::Method;
use serde::de::DeserializeOwned;

use super::output::{self, Format};
use crate::client::{Client, ClientError, RawResponse};

/// A successful answer: the raw body (printed as is for `--output json`) and its value.
pub struct Answer<T> {
    pub raw: bytes::Bytes,
    pub value: T,
}

/// The API error a failed answer carries, its message made safe for a terminal.
fn api_error(response: &RawResponse) -> ClientError {
    match response.api_error() {
        ClientError::Api {
            status,
            error_code,
            error_msg,
            request_id,
        } => ClientError::Api {
            status,
            error_code,
            error_msg: output::clean(&error_msg),
            request_id,
        },
        other => other,
    }
}

/// Sends one signed request to `rest` under the project's path.
pub async fn call<T: DeserializeOwned>(
    client: &Client,
    method: Method,
    rest: &str,
    query: &[(&str, String)],
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Result<Answer<T>, ClientError> {
    let path = client.project_path(rest);
    let response = client.send(method, &path, query, body, headers).await?;
    if response.status >= 400 {
        return Err(api_error(&response));
    }
    let value = serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
        status: response.status,
        detail: e.to_string(),
    })?;
    Ok(Answer {
        raw: response.body,
        value,
    })
}

/// Prints the raw answer for `--output json`, else the table made from its value.
pub fn print_answer<T>(
    format: Format,
    answer: &Answer<T>,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => output::print(&format!("{}\n", output::pretty_json(&answer.raw))),
        Format::Table => output::print(&table(&answer.value)),
    }
}
