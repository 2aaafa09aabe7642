//! Operational metrics in the Prometheus text format, served at `GET /metrics`, through the
//! `metrics` facade and its Prometheus exporter (no listener of its own: carebroker serves the
//! text).
//!
//! INVARIANT: no label carries a user, a patient, a token, a code or a client secret. Labels are
//! route templates (`/fhir/CarePlan/{id}`, never the id), methods, status codes, grant types,
//! OAuth and FHIR error codes, policy effects, store backends and operations, and identity
//! provider ids from configuration.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The recorder is process-wide; every app in the process reports to it.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds): from a cached token check to a slow upstream provider.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the recorder once per process (later calls reuse it); `None` when another recorder
/// was installed first, in which case metrics go there and `/metrics` says so.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS);
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("carebroker_http_requests_total", "HTTP requests by route template, method and status");
    describe_histogram!("carebroker_http_request_duration_seconds", "HTTP request latency by route template");
    describe_counter!("carebroker_tokens_issued_total", "Access tokens issued, by grant type");
    describe_counter!("carebroker_oauth_refusals_total", "OAuth refusals by error code");
    describe_counter!("carebroker_fhir_refusals_total", "FHIR refusals by HTTP status");
    describe_counter!("carebroker_policy_decisions_total", "Access policy decisions by effect");
    describe_counter!("carebroker_store_operations_total", "Store operations by store, backend and operation");
    describe_counter!("carebroker_store_errors_total", "Store errors by backend and store");
    describe_histogram!("carebroker_audit_append_duration_seconds", "Time to append one batch to the audit log");
    describe_counter!("carebroker_audit_records_total", "Audit records appended");
    describe_gauge!("carebroker_audit_queue_depth", "Audit records waiting for the writer");
    describe_histogram!("carebroker_upstream_duration_seconds", "Identity-provider calls by provider and outcome");
    describe_counter!("carebroker_upstream_errors_total", "Identity-provider call failures by provider");
    describe_gauge!("carebroker_signing_key_age_seconds", "Age of the oldest key now signing tokens");
}

/// The exposition text, with the key age as of `now`.
pub fn render(key_created_at: i64, now: i64) -> Option<String> {
    let handle = install()?;
    if key_created_at != i64::MAX {
        gauge!("carebroker_signing_key_age_seconds").set((now - key_created_at).max(0) as f64);
    }
    Some(handle.render())
}

/// One answered HTTP request.
pub fn request(route: &str, method: &str, status: u16, took: Duration) {
    let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
    counter!("carebroker_http_requests_total", &labels).increment(1);
    histogram!("carebroker_http_request_duration_seconds", "route" => route.to_owned()).record(took.as_secs_f64());
}

pub fn token_issued(grant: &'static str) {
    counter!("carebroker_tokens_issued_total", "grant" => grant).increment(1);
}

pub fn oauth_refusal(error: &'static str) {
    counter!("carebroker_oauth_refusals_total", "error" => error).increment(1);
}

pub fn fhir_refusal(status: u16) {
    counter!("carebroker_fhir_refusals_total", "status" => status.to_string()).increment(1);
}

pub fn policy_decision(permit: bool) {
    counter!("carebroker_policy_decisions_total", "effect" => if permit { "permit" } else { "deny" }).increment(1);
}

/// A store call: `store` is `durable` or `ephemeral`, `backend` the kind behind it, `operation`
/// the trait method.
pub fn store_operation(store: &'static str, backend: &'static str, operation: &'static str) {
    counter!("carebroker_store_operations_total", "store" => store, "backend" => backend, "operation" => operation)
        .increment(1);
}

/// A store call that failed: `store` is `durable` or `ephemeral`, `backend` the kind behind it.
pub fn store_error(store: &'static str, backend: &'static str) {
    counter!("carebroker_store_errors_total", "store" => store, "backend" => backend).increment(1);
}

pub fn audit_append(records: usize, took: Duration, ok: bool) {
    histogram!("carebroker_audit_append_duration_seconds").record(took.as_secs_f64());
    if ok {
        counter!("carebroker_audit_records_total").increment(records as u64);
    } else {
        store_error("durable", "audit");
    }
}

pub fn audit_queue_depth(depth: usize) {
    gauge!("carebroker_audit_queue_depth").set(depth as f64);
}

/// One call to an upstream identity provider (`provider` is its configured id).
pub fn upstream(provider: &str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    histogram!("carebroker_upstream_duration_seconds", "provider" => provider.to_owned(), "outcome" => outcome)
        .record(took.as_secs_f64());
    if !ok {
        counter!("carebroker_upstream_errors_total", "provider" => provider.to_owned()).increment(1);
    }
}
