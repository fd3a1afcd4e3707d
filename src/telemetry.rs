//! Optional OpenTelemetry export of the request spans: OTLP over HTTP (protobuf) to a
//! collector, batched off the request path. Off unless `serve --otlp-endpoint` is given.
//!
//! The exporter sends through the service's own HTTP client on the service's runtime (the
//! batch processor runs on a thread of its own and waits for the answer), so no second HTTP
//! stack is built in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Whether spans are exported by this process: requests then give their spans the fields
/// a trace shows.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True once an exporter has started in this process.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Longest an export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The span exporter of a running service.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts exporting to the collector at `endpoint` (its base URL). Must be called on the
    /// service's runtime.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let client = RuntimeClient {
            client: reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?,
            runtime: tokio::runtime::Handle::try_current()?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("litejobs")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Telemetry { provider })
    }

    /// The `tracing` layer that turns spans into exported ones.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("litejobs"))
    }

    /// Sends what is still batched, then stops.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The flush waits for exports that run on this runtime: off its worker threads.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "cannot flush the trace spans");
        }
    }
}

/// The service's reqwest client as the exporter's HTTP client: each export runs on the
/// service's runtime, awaited from the batch processor's thread.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let sent = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let answer = self
            .runtime
            .spawn(async move {
                let response = sent.send().await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let (status, headers, body) = answer;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
