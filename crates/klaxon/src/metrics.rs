//! Prometheus metrics (PRODUCT.md §8). One recorder per process; `/metrics` renders it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds from accepted to delivered: alerts should take milliseconds, retries take seconds.
const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the recorder once (tests start many services in one process) and returns it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("klaxon_delivery_seconds".into()),
                    DELIVERY_BUCKETS,
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "klaxon_notifications_received_total",
        "Notifications accepted, by source."
    );
    metrics::describe_counter!(
        "klaxon_notifications_suppressed_total",
        "Notifications stored with every delivery suppressed, by source and reason (dedup, switched_off)."
    );
    metrics::describe_counter!(
        "klaxon_deliveries_total",
        "Delivery attempts by channel and outcome (delivered, retrying, dead)."
    );
    metrics::describe_histogram!(
        "klaxon_delivery_seconds",
        "Seconds from accepting a notification to delivering it, by channel."
    );
    metrics::describe_gauge!(
        "klaxon_queue_depth",
        "Deliveries waiting, in flight or dead, by channel and status (pending, sending, retrying, dead)."
    );
    metrics::describe_gauge!(
        "klaxon_channel_up",
        "1 when the channel is enabled and its circuit closed."
    );
    metrics::describe_counter!(
        "klaxon_rate_limited_total",
        "429 answers received, by channel."
    );
    metrics::describe_counter!(
        "klaxon_retries_total",
        "Attempts that will be retried, by channel."
    );
    metrics::describe_counter!(
        "klaxon_digests_total",
        "Digest notifications made from bursts, by channel."
    );
    metrics::describe_counter!(
        "klaxon_aggregated_total",
        "Deliveries folded into a digest, by channel."
    );
}
