//! Prometheus metrics: request counts by route, action and status, a
//! latency histogram, and a state gauge (sealed for Nexus, share held for a
//! Keeper). Served at `GET /metrics` in the OpenMetrics text format.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    action: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// Raises `counter` to `total`, a running total kept elsewhere (counters
/// only go up).
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Raises `counter` to `total` seconds.
fn catch_up_seconds(counter: &Counter<f64, std::sync::atomic::AtomicU64>, total: Duration) {
    let seconds = total.as_secs_f64() - counter.get();
    if seconds > 0.0 {
        counter.inc_by(seconds);
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// The metrics of one server.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    state: Gauge,
    commits: Counter,
    committed_writes: Counter,
    commit_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    checkpoints: Counter,
    checkpoint_keys: Counter,
    checkpoint_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    checkpoint_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    routes: &'static [&'static str],
}

/// `?action=` values counted by name; anything else is `other`.
const ACTIONS: [&str; 6] = ["get", "delete", "undelete", "list", "destroy", "none"];

impl Metrics {
    /// Metrics for a server serving `routes`; `state_name`/`state_help`
    /// name its state gauge.
    pub(crate) fn new(
        routes: &'static [&'static str],
        state_name: &'static str,
        state_help: &'static str,
    ) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let state = Gauge::default();
        let mut registry = Registry::default();
        registry.register(
            "spike_http_requests",
            "HTTP requests answered, by route, action and status",
            requests.clone(),
        );
        registry.register(
            "spike_http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        registry.register(state_name, state_help, state.clone());
        let commits = Counter::default();
        let committed_writes = Counter::default();
        let commit_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "spike_store_commits",
            "Durable commits of the backing store (Nexus)",
            commits.clone(),
        );
        registry.register(
            "spike_store_committed_writes",
            "Writes acknowledged through those commits: writes per commit is the group-commit factor (Nexus)",
            committed_writes.clone(),
        );
        registry.register(
            "spike_store_commit_seconds",
            "Time spent in backing-store commits, fsync included (Nexus)",
            commit_seconds.clone(),
        );
        let checkpoints = Counter::default();
        let checkpoint_keys = Counter::default();
        let checkpoint_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        let checkpoint_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "spike_store_checkpoints",
            "Checkpoints of the redb store, run in the background (Nexus)",
            checkpoints.clone(),
        );
        registry.register(
            "spike_store_checkpoint_keys",
            "Keys those checkpoints wrote into redb (Nexus)",
            checkpoint_keys.clone(),
        );
        registry.register(
            "spike_store_checkpoint_seconds",
            "Time spent in those checkpoints (Nexus)",
            checkpoint_seconds.clone(),
        );
        registry.register(
            "spike_store_checkpoint_wait_seconds",
            "Time commits waited for checkpoints to finish (Nexus)",
            checkpoint_wait_seconds.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            state,
            commits,
            committed_writes,
            commit_seconds,
            checkpoints,
            checkpoint_keys,
            checkpoint_seconds,
            checkpoint_wait_seconds,
            routes,
        }
    }

    /// The route label of `path`: a known route, or `other` (bounded
    /// cardinality whatever clients send).
    pub(crate) fn route_label(&self, path: &str) -> &'static str {
        self.routes
            .iter()
            .copied()
            .find(|r| *r == path)
            .unwrap_or("other")
    }

    /// The action label of a query string.
    pub(crate) fn action_label(&self, query: Option<&str>) -> &'static str {
        let action = query.and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix("action="))
                .next_back()
        });
        match action {
            None | Some("") => "none",
            Some(a) => ACTIONS.iter().copied().find(|k| *k == a).unwrap_or("other"),
        }
    }

    pub(crate) fn observe(
        &self,
        route: &'static str,
        action: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                action,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Brings the checkpoint counters up to `stats` (read at scrape).
    pub(crate) fn set_checkpoints(&self, stats: spike_storage::CheckpointStats) {
        catch_up(&self.checkpoints, stats.count);
        catch_up(&self.checkpoint_keys, stats.keys);
        catch_up_seconds(&self.checkpoint_seconds, stats.time);
        catch_up_seconds(&self.checkpoint_wait_seconds, stats.waited);
    }

    /// Sets the state gauge.
    pub(crate) fn set_state(&self, value: i64) {
        self.state.set(value);
    }

    /// Brings the store commit counters up to `stats` (read at scrape).
    pub(crate) fn set_commits(&self, stats: spike_core::CommitStats) {
        catch_up(&self.commits, stats.commits);
        catch_up(&self.committed_writes, stats.writes);
        catch_up_seconds(&self.commit_seconds, stats.commit_time);
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub(crate) fn response(metrics: &Metrics) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::http::header;
    use axum::response::IntoResponse;
    match metrics.encode() {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => crate::error::ApiError::internal().into_response(),
    }
}
