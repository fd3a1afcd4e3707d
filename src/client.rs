//! The API client of the CLI, the benchmark and the tests: signs every request with the
//! shared `SDK-HMAC-SHA256` code (or sends a token) exactly as the vendor's SDK does.

use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::sign::{self, Credentials};
use crate::wire::{
    AgentHeartbeat, AgentLease, AgentRegistration, AgentResult, DeleteJobsRequest, ErrorBody,
    HeartbeatAnswer, JobCreateRequest, JobDetail, JobListItem, Page, TaskOutputAnswer,
    TemplateDetail, TemplateListItem,
};

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    AkSk(Credentials),
    Token(String),
}

mod error;
mod events;

pub use error::{root_cause, ClientError};
pub use events::{EventStream, StreamEvent, STREAM_SILENCE};

/// A raw answer: status, headers and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Success without a body, or the API error.
    fn into_empty(self) -> Result<(), ClientError> {
        if self.status < 400 {
            return Ok(());
        }
        self.into_result::<serde_json::Value>().map(|_| ())
    }

    /// The API error of a failed answer: the error body's code and message (or, for a body
    /// that is not one, the status and the raw text) and the `X-Request-Id`.
    pub fn api_error(&self) -> ClientError {
        let request_id = self
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => ClientError::Api {
                status: self.status,
                error_code: e.error_code,
                error_msg: e.error_msg,
                request_id,
            },
            // Not the service's answer (a proxy's page, say): its start, on one line.
            Err(_) => {
                let text = String::from_utf8_lossy(&self.body);
                let mut said: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if let Some((cut, _)) = said.char_indices().nth(200) {
                    said.truncate(cut);
                    said.push('…');
                }
                ClientError::Api {
                    status: self.status,
                    error_code: self.status.to_string(),
                    error_msg: format!("an answer that is not the service's: {said}"),
                    request_id,
                }
            }
        }
    }

    fn into_result<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        if self.status >= 400 {
            return Err(self.api_error());
        }
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
            status: self.status,
            detail: e.to_string(),
        })
    }
}

/// A client of one project on one endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Extra trusted certificates (PEM), and the local address to send from.
    ca_pem: Option<Vec<u8>>,
    local: Option<std::net::IpAddr>,
    endpoint: String,
    host: String,
    project_id: String,
    auth: ClientAuth,
    user_agent: String,
}

impl Client {
    /// The HTTP client: HTTPS verified against the public roots and `ca_pem`'s certificates
    /// (a private CA, PEM), when given.
    fn http(
        ca_pem: Option<&[u8]>,
        local: Option<std::net::IpAddr>,
    ) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .use_rustls_tls()
            .local_address(local);
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder.build()?)
    }

    /// The same client, also trusting the certificates of `ca_pem` (PEM): for a server whose
    /// certificate a private CA signed.
    pub fn trusting(mut self, ca_pem: &[u8]) -> Result<Self, ClientError> {
        self.ca_pem = Some(ca_pem.to_vec());
        self.http = Self::http(self.ca_pem.as_deref(), self.local)?;
        Ok(self)
    }

    /// The same client, sending from the local address `local` (a multi-homed host).
    pub fn bound_to(mut self, local: std::net::IpAddr) -> Result<Self, ClientError> {
        self.local = Some(local);
        self.http = Self::http(self.ca_pem.as_deref(), self.local)?;
        Ok(self)
    }

    /// `endpoint` is `http://host:port` or `https://host:port` (a trailing `/` is ignored).
    pub fn new(endpoint: &str, project_id: &str, auth: ClientAuth) -> Result<Self, ClientError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let url =
            reqwest::Url::parse(&endpoint).map_err(|e| ClientError::Endpoint(e.to_string()))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(ClientError::Endpoint(format!("{endpoint} has no host"))),
        };
        let http = Self::http(None, None)?;
        Ok(Self {
            http,
            ca_pem: None,
            local: None,
            endpoint,
            host,
            project_id: project_id.to_string(),
            auth,
            user_agent: format!("litejobs/{}", env!("CARGO_PKG_VERSION")),
        })
    }

    /// The same client acting in another project.
    pub fn for_project(&self, project_id: &str) -> Self {
        Self {
            project_id: project_id.to_string(),
            ..self.clone()
        }
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The API path of the client's project followed by `rest` (which starts with `/`).
    pub fn project_path(&self, rest: &str) -> String {
        format!("/v1/{}{rest}", sign::encode(self.project_id.as_bytes()))
    }

    /// Sends a request to `path` (already percent-encoded) with `query` pairs and an optional
    /// JSON body, signed; answers whatever came back.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<RawResponse, ClientError> {
        let response = self
            .signed(method, path, query, body, extra_headers)
            .send()
            .await?;
        Ok(RawResponse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await?,
        })
    }

    /// Opens a stream of Server-Sent Events at `path` (signed like any call), after the
    /// event `last_event_id` when given. The stream has no overall time limit: the server
    /// sends a comment every 15 s, and [`EventStream::next`] gives up after
    /// [`STREAM_SILENCE`] without any byte.
    pub async fn events(
        &self,
        path: &str,
        query: &[(&str, String)],
        last_event_id: Option<i64>,
    ) -> Result<EventStream, ClientError> {
        let last = last_event_id.map(|id| id.to_string());
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(id) = &last {
            headers.push(("Last-Event-ID", id.as_str()));
        }
        let response = self
            .signed(Method::GET, path, query, None, &headers)
            .timeout(std::time::Duration::from_secs(100 * 365 * 24 * 3600))
            .send()
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let raw = RawResponse {
                status,
                headers: response.headers().clone(),
                body: response.bytes().await?,
            };
            return Err(raw.api_error());
        }
        use eventsource_stream::Eventsource;
        Ok(EventStream {
            inner: Box::pin(response.bytes_stream().eventsource()),
        })
    }

    /// A signed request, ready to send.
    fn signed(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let query = sign::query_string(query);
        let body = body.unwrap_or_default();
        let content_type = if method == Method::GET {
            "application/json"
        } else {
            "application/json;charset=utf-8"
        };
        let mut headers: Vec<(String, String)> = vec![
            ("Host".into(), self.host.clone()),
            ("Content-Type".into(), content_type.into()),
            ("User-Agent".into(), self.user_agent.clone()),
            ("X-Project-Id".into(), self.project_id.clone()),
        ];
        for (n, v) in extra_headers {
            headers.push((n.to_string(), v.to_string()));
        }
        match &self.auth {
            ClientAuth::AkSk(creds) => {
                let authorization = sign::sign(
                    method.as_str(),
                    path,
                    &query,
                    &mut headers,
                    &body,
                    creds,
                    chrono::Utc::now(),
                );
                headers.push(("Authorization".into(), authorization));
            }
            ClientAuth::Token(token) => headers.push(("X-Auth-Token".into(), token.clone())),
        }
        let url = if query.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{query}", self.endpoint)
        };
        let mut request = self.http.request(method, &url);
        for (n, v) in &headers {
            request = request.header(n.as_str(), v.as_str());
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        request
    }

    fn json_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value).map_err(|e| ClientError::Decode {
            status: 0,
            detail: e.to_string(),
        })
    }

    /// `GET …/dev-servers/jobs` with the given query pairs (filters and paging).
    pub async fn list_jobs(
        &self,
        query: &[(&str, String)],
    ) -> Result<Page<JobListItem>, ClientError> {
        let path = self.project_path("/dev-servers/jobs");
        self.send(Method::GET, &path, query, None, &[])
            .await?
            .into_result()
    }

    pub async fn get_job(&self, id: &str) -> Result<JobDetail, ClientError> {
        let path = self.project_path(&format!(
            "/dev-servers/jobs/{}",
            sign::encode(id.as_bytes())
        ));
        self.send(Method::GET, &path, &[], None, &[])
            .await?
            .into_result()
    }

    pub async fn create_job(
        &self,
        request: &JobCreateRequest,
        client_token: Option<&str>,
    ) -> Result<JobDetail, ClientError> {
        let path = self.project_path("/dev-servers/jobs");
        let headers: Vec<(&str, &str)> = client_token
            .map(|t| vec![("X-Client-Token", t)])
            .unwrap_or_default();
        self.send(
            Method::POST,
            &path,
            &[],
            Some(Self::json_body(request)?),
            &headers,
        )
        .await?
        .into_result()
    }

    pub async fn delete_jobs(&self, ids: &[String]) -> Result<Page<JobListItem>, ClientError> {
        let path = self.project_path("/dev-servers/jobs");
        let body = Self::json_body(&DeleteJobsRequest {
            job_ids: ids.to_vec(),
        })?;
        self.send(Method::DELETE, &path, &[], Some(body), &[])
            .await?
            .into_result()
    }

    pub async fn list_templates(
        &self,
        query: &[(&str, String)],
    ) -> Result<Page<TemplateListItem>, ClientError> {
        let path = self.project_path("/dev-servers/jobs/templates");
        self.send(Method::GET, &path, query, None, &[])
            .await?
            .into_result()
    }

    /// The path of `rest` under one of the project's servers of the agent protocol.
    fn server_path(&self, server_id: &str, rest: &str) -> String {
        self.project_path(&format!(
            "/agent/servers/{}{rest}",
            sign::encode(server_id.as_bytes())
        ))
    }

    /// Registers (or updates) a node agent's server.
    pub async fn register_server(
        &self,
        server_id: &str,
        registration: &AgentRegistration,
    ) -> Result<(), ClientError> {
        let path = self.server_path(server_id, "");
        let body = Self::json_body(registration)?;
        self.send(Method::PUT, &path, &[], Some(body), &[])
            .await?
            .into_empty()
    }

    /// Leases up to `max` of the server's tasks, waiting up to `wait_secs` for some.
    pub async fn lease_tasks(
        &self,
        server_id: &str,
        wait_secs: u64,
        max: u32,
    ) -> Result<AgentLease, ClientError> {
        let path = self.server_path(server_id, "/lease");
        // This agent renews its leases (heartbeats): each lasts the service's lease time.
        let query = [
            ("max", max.to_string()),
            ("wait", wait_secs.to_string()),
            ("renews", "true".to_string()),
        ];
        self.send(Method::POST, &path, &query, None, &[])
            .await?
            .into_result()
    }

    /// Renews the leases the agent holds on `server_id`; answers where each stands.
    pub async fn heartbeat(
        &self,
        server_id: &str,
        beat: &AgentHeartbeat,
    ) -> Result<HeartbeatAnswer, ClientError> {
        let path = self.server_path(server_id, "/heartbeat");
        let body = Self::json_body(beat)?;
        self.send(Method::POST, &path, &[], Some(body), &[])
            .await?
            .into_result()
    }

    /// Uploads the tail of a running task's output under its lease `lease_epoch`.
    pub async fn put_output(
        &self,
        server_id: &str,
        task_id: &str,
        lease_epoch: i64,
        output: &str,
    ) -> Result<(), ClientError> {
        let path = self.server_path(
            server_id,
            &format!("/tasks/{}/output", sign::encode(task_id.as_bytes())),
        );
        let query = [("lease_epoch", lease_epoch.to_string())];
        let body = output.as_bytes().to_vec();
        self.send(Method::PUT, &path, &query, Some(body), &[])
            .await?
            .into_empty()
    }

    /// The tail of a task's output, as its agent last uploaded it.
    pub async fn task_output(
        &self,
        job_id: &str,
        task_id: &str,
    ) -> Result<TaskOutputAnswer, ClientError> {
        let path = self.project_path(&format!(
            "/dev-servers/jobs/{}/tasks/{}/output",
            sign::encode(job_id.as_bytes()),
            sign::encode(task_id.as_bytes())
        ));
        self.send(Method::GET, &path, &[], None, &[])
            .await?
            .into_result()
    }

    /// Reports a leased task's result.
    pub async fn report_result(
        &self,
        server_id: &str,
        task_id: &str,
        result: &AgentResult,
    ) -> Result<(), ClientError> {
        let path = self.server_path(
            server_id,
            &format!("/tasks/{}/result", sign::encode(task_id.as_bytes())),
        );
        let body = Self::json_body(result)?;
        self.send(Method::POST, &path, &[], Some(body), &[])
            .await?
            .into_empty()
    }

    pub async fn get_template(&self, id: &str) -> Result<TemplateDetail, ClientError> {
        let path = self.project_path(&format!(
            "/dev-servers/jobs/templates/{}",
            sign::encode(id.as_bytes())
        ));
        self.send(Method::GET, &path, &[], None, &[])
            .await?
            .into_result()
    }
}

/// Asks `POST /v3/auth/tokens` for a token of `user` scoped to `project` (id or name).
pub async fn issue_token(
    endpoint: &str,
    user: &str,
    password: &str,
    project: &str,
) -> Result<String, ClientError> {
    let body = serde_json::json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": password, "domain": {"name": user}}}
            },
            "scope": {"project": {"id": project}}
        }
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", endpoint.trim_end_matches('/')))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let token = response
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    match token {
        Some(t) if status == 201 => Ok(t),
        _ => Err(RawResponse {
            status: status.max(400),
            headers,
            body: bytes,
        }
        .into_result::<serde_json::Value>()
        .err()
        .unwrap_or(ClientError::Decode {
            status,
            detail: "no X-Subject-Token in the answer".into(),
        })),
    }
}
