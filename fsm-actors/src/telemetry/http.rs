//! The HTTP endpoint: health, readiness, the tree as JSON, and the metrics
//! for Prometheus.
//!
//! | path       | answers |
//! |------------|---------|
//! | `/healthz` | 200 while the process runs and the tree it serves (if any) has neither stopped nor given up; 503 otherwise |
//! | `/readyz`  | 200 once the tree has converged on the generation in force and has not given up; 503 otherwise, with a line saying why |
//! | `/tree`    | the tree's snapshot as JSON ([`NodeSnapshot::from_json`](crate::NodeSnapshot::from_json) reads it back); 503 while there is none |
//! | `/metrics` | the metrics in Prometheus text format 0.0.4, collected for the scrape; 404 when the server has no metrics |
//!
//! The server runs on a thread of its own (a single-threaded tokio runtime),
//! so a busy tree cannot starve a probe and a probe cannot slow the tree.
//! Connections are served concurrently, up to a limit; each must send its
//! request headers within [`HttpServerBuilder::header_read_timeout`], in at
//! most [`HttpServerBuilder::max_header_bytes`], and is closed after one
//! response, or at the latest after the header timeout plus
//! [`HttpServerBuilder::response_timeout`]. It stops when its
//! [`HttpServer`] handle is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tokio::sync::{Semaphore, oneshot};

use super::prometheus::PrometheusExporter;
use crate::Tree;
use crate::tree::TreeHandle;

/// The smallest header limit the HTTP/1 parser accepts.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Builds an [`HttpServer`]: what it serves and its limits.
///
/// ```no_run
/// use fsm_actors::telemetry::http::HttpServer;
///
/// # fn main() -> std::io::Result<()> {
/// let server = HttpServer::builder().bind("127.0.0.1:9464".parse().unwrap())?;
/// // ... spawn a tree, then: server.serve_tree(&tree);
/// drop(server); // stops serving
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpServerBuilder {
    metrics: Option<(SdkMeterProvider, PrometheusExporter)>,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    response_timeout: Duration,
    max_connections: usize,
}

impl Default for HttpServerBuilder {
    fn default() -> Self {
        Self {
            metrics: None,
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            response_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

impl HttpServerBuilder {
    /// Serve `/metrics`: each scrape forces a collection through `provider`
    /// and answers with what `exporter` rendered.
    pub fn metrics(mut self, provider: SdkMeterProvider, exporter: PrometheusExporter) -> Self {
        self.metrics = Some((provider, exporter));
        self
    }

    /// How long a client may take to send its request line and headers
    /// (default 5 s); slower clients are disconnected.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The most bytes a request's line and headers may take (default
    /// 16 KiB; at least 8 KiB); larger requests get 431 and are
    /// disconnected.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes.max(MIN_HEADER_BYTES);
        self
    }

    /// How long answering one request may take, writing the response
    /// included (default 10 s). A handler that takes longer answers 503; a
    /// client that does not read its response is disconnected.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many connections are served at once (default 64, at least 1);
    /// further connections wait in the listen queue.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// Binds `addr` and starts serving on a thread of its own. Port 0 picks
    /// a free port ([`HttpServer::local_addr`] tells which). Bind a loopback
    /// address unless the endpoint must be reached from elsewhere: it has
    /// no authentication.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or the thread cannot start.
    pub fn bind(self, addr: SocketAddr) -> std::io::Result<HttpServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let tree = Arc::new(RwLock::new(None));
        let state = Arc::new(Served {
            metrics: self.metrics.clone(),
            tree: Arc::clone(&tree),
            response_timeout: self.response_timeout,
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fsm-http".to_owned())
            .spawn(move || {
                runtime.block_on(accept(listener, state, self, stopped));
                // Cancels every open connection; a collection still running
                // on the blocking pool is not waited for long.
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        tracing::info!(addr = %local_addr, "serving /healthz, /readyz, /tree and /metrics");
        Ok(HttpServer {
            local_addr,
            tree,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running HTTP endpoint (see the [module](self) documentation for what
/// it serves). Dropping it stops the server: the listener and every open
/// connection are closed before the drop returns.
#[derive(Debug)]
#[must_use = "dropping the server stops it"]
pub struct HttpServer {
    local_addr: SocketAddr,
    tree: Arc<RwLock<Option<TreeHandle>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// A builder with the default limits and nothing but `/healthz` served
    /// until a tree or metrics are added.
    pub fn builder() -> HttpServerBuilder {
        HttpServerBuilder::default()
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `tree` at `/tree` and judges `/healthz` and `/readyz` by it,
    /// from now on (replacing any tree served before). The server holds no
    /// part of the tree that keeps it running: once the tree is shut down or
    /// dropped, `/healthz` and `/readyz` answer 503.
    pub fn serve_tree(&self, tree: &Tree) {
        *self.tree.write().unwrap_or_else(PoisonError::into_inner) = Some(tree.handle());
    }

    /// Stops serving (as dropping does).
    pub fn stop(self) {}
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // Dropping the sender wakes the accept loop, which returns; the
        // thread then drops its runtime, closing every connection.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the HTTP endpoint's thread panicked");
        }
    }
}

/// What the handlers serve from.
struct Served {
    metrics: Option<(SdkMeterProvider, PrometheusExporter)>,
    tree: Arc<RwLock<Option<TreeHandle>>>,
    response_timeout: Duration,
}

impl Served {
    fn tree(&self) -> Option<TreeHandle> {
        self.tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn accept(
    listener: std::net::TcpListener,
    state: Arc<Served>,
    limits: HttpServerBuilder,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP endpoint cannot listen");
            return;
        }
    };
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/tree", get(tree))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        // One request per connection: no idle connections to hold open.
        .keep_alive(false);
    // A hard bound on a connection's life: headers, handler and writing the
    // response (a client that does not read is cut off here).
    let lifetime = limits.header_read_timeout + limits.response_timeout;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            _ = &mut stopped => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: pause briefly rather than spin.
                    tracing::debug!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(lifetime, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "HTTP connection failed"),
                Err(_) => tracing::debug!("HTTP connection cut off: it took too long"),
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Why the tree is not alive, if it is not.
fn not_alive(tree: &TreeHandle) -> Option<String> {
    if !tree.is_running() {
        return Some("the tree has stopped".to_owned());
    }
    tree.status()
        .fatal
        .map(|fatal| format!("the tree gave up: {fatal}"))
}

async fn healthz(State(state): State<Arc<Served>>) -> Response {
    match state.tree().as_ref().and_then(not_alive) {
        None => text(StatusCode::OK, "ok\n".to_owned()),
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(state): State<Arc<Served>>) -> Response {
    let Some(tree) = state.tree() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no tree is running yet\n".to_owned(),
        );
    };
    if let Some(why) = not_alive(&tree) {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    let status = tree.status();
    let generation = tree.generation();
    if status.converged && status.observed_generation >= generation {
        return text(StatusCode::OK, "ready\n".to_owned());
    }
    let c = status.counts;
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not converged: {} of {} nodes converged, {} unhealthy, {} restarting; generation {} of {} acted on\n",
            c.converged, c.nodes, c.unhealthy, c.restarting, status.observed_generation, generation
        ),
    )
}

async fn tree(State(state): State<Arc<Served>>) -> Response {
    let Some(tree) = state.tree() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no tree is running yet\n".to_owned(),
        );
    };
    // The inspection has its own timeout (`TreeConfig::inspect_timeout`).
    match tree.inspect().await.map(|snapshot| snapshot.to_json()) {
        Ok(Ok(json)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the snapshot does not serialise: {e}\n"),
        ),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics(State(state): State<Arc<Served>>) -> Response {
    let Some((provider, exporter)) = state.metrics.clone() else {
        return text(
            StatusCode::NOT_FOUND,
            "metrics are not served here\n".to_owned(),
        );
    };
    // A collection blocks until the readers are done: off the server's
    // only thread, so other requests go on meanwhile.
    let collect = tokio::task::spawn_blocking(move || {
        let _ = provider.force_flush();
        exporter.text()
    });
    match tokio::time::timeout(state.response_timeout, collect).await {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the collection failed: {e}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the collection took too long\n".to_owned(),
        ),
    }
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "try /healthz, /readyz, /tree or /metrics\n".to_owned(),
    )
}
