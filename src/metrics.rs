//! The server's Prometheus metrics: one [`Metrics`] per server, owned by the [`crate::http::App`] and
//! handed to whatever counts. It holds a `prometheus-client` registry (encoded as the Prometheus text
//! format on the separate `--metrics` listener) and the handles that the routes and bodies update.
//!
//! Hot paths stay cheap: every handle is an atomic. Labelled series (HTTP version, status class)
//! have fixed label values, so their counters are created once here and picked by index, never looked
//! up in a family's map per request or per chunk; the relay-delay histogram is [`RelayHistogram`],
//! atomic buckets encoded through `prometheus-client`, because the crate's own histogram takes a lock
//! per observation. What the store already counts (entries, bytes in memory, uploads in progress, GC
//! purges, disk write errors) is read at scrape time by [`StoreCollector`], so the store knows nothing
//! of Prometheus. No route logic lives here (the `/metrics` route is in [`crate::http`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::store::Store;

/// The `Content-Type` of a scrape (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the relay-delay buckets: from 100 µs (a reader woken on the append and
/// written out at once) to 10 s (a stalled client or transport).
pub const RELAY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label values of `version`, in the order of [`Metrics::version_index`].
const VERSIONS: [&str; 3] = ["1.1", "2", "3"];
/// The label values of `class`.
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: [Counter; 3],
    sent: [Counter; 3],
    responses: [Counter; 4],
    growing_readers: Gauge,
    relay_delay: RelayHistogram,
    hls_blocking: Gauge,
    early_held: Counter,
    early_waiting: Gauge,
    slow_cut: Counter,
    ingest_tracks: Gauge,
    ingest_chunks: Counter,
    ingest_refused: Counter,
    quic: QuicMeter,
    uploads_over_share: Counter,
    uploads_too_slow: Counter,
    held_refused: Counter,
    held: Gauge,
    dvr_deferred: Counter,
}

impl Metrics {
    /// The metrics of a server over `store` (read at scrape time for what the store counts).
    pub fn new(store: &Store) -> Metrics {
        let mut registry = Registry::with_prefix("ldash");
        let received = Family::<Labels, Counter>::default();
        let sent = Family::<Labels, Counter>::default();
        let responses = Family::<Labels, Counter>::default();
        let per_version =
            |family: &Family<Labels, Counter>| VERSIONS.map(|v| family.get_or_create_owned(&vec![("version", v)]));
        let metrics = Metrics {
            received: per_version(&received),
            sent: per_version(&sent),
            responses: CLASSES.map(|c| responses.get_or_create_owned(&vec![("class", c)])),
            growing_readers: Gauge::default(),
            relay_delay: RelayHistogram::new(&RELAY_BUCKETS),
            hls_blocking: Gauge::default(),
            early_held: Counter::default(),
            early_waiting: Gauge::default(),
            slow_cut: Counter::default(),
            ingest_tracks: Gauge::default(),
            ingest_chunks: Counter::default(),
            ingest_refused: Counter::default(),
            quic: QuicMeter::default(),
            uploads_over_share: Counter::default(),
            uploads_too_slow: Counter::default(),
            held_refused: Counter::default(),
            held: Gauge::default(),
            dvr_deferred: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "received_bytes",
            "Request body bytes received (uploads), by HTTP version",
            received,
        );
        registry.register(
            "sent_bytes",
            "Response body bytes handed to the transport, by HTTP version",
            sent,
        );
        registry.register(
            "responses",
            "Responses on the public listeners, by status class",
            responses,
        );
        registry.register(
            "growing_readers",
            "Downloads attached to a growing entry (streaming an upload while it arrives)",
            metrics.growing_readers.clone(),
        );
        registry.register(
            "relay_delay_seconds",
            "Time from a chunk's append to the store to its hand-over to the transport, for chunks appended while the download was attached",
            metrics.relay_delay.clone(),
        );
        registry.register(
            "hls_blocking_requests",
            "LL-HLS blocking playlist reloads (_HLS_msn) in progress",
            metrics.hls_blocking.clone(),
        );
        registry.register(
            "early_requests_held",
            "Requests for a live segment not yet uploaded that were held for its upload instead of a 404",
            metrics.early_held.clone(),
        );
        registry.register(
            "early_requests_waiting",
            "Early requests held right now",
            metrics.early_waiting.clone(),
        );
        registry.register(
            "slow_readers_cut",
            "Downloads of a growing entry cut off for falling further behind its upload than --reader-lag-limit",
            metrics.slow_cut.clone(),
        );
        registry.register(
            "ingest_tracks",
            "CMAF ingest tracks (POST to {channel}/Streams({track})) being received",
            metrics.ingest_tracks.clone(),
        );
        registry.register(
            "ingest_chunks",
            "CMAF chunks (fragments) packaged from CMAF ingest tracks",
            metrics.ingest_chunks.clone(),
        );
        registry.register(
            "ingest_refused",
            "CMAF ingest tracks refused (not CMAF, no init segment, a fragment too large, ...)",
            metrics.ingest_refused.clone(),
        );
        metrics.quic.register(&mut registry);
        registry.register(
            "uploads_over_share",
            "Uploads refused (503) because their peer held its share of the upload slots (--max-uploads-per-peer)",
            metrics.uploads_over_share.clone(),
        );
        registry.register(
            "uploads_too_slow",
            "Uploads cut (408) for delivering less than --upload-min-bytes in a --upload-rate-window",
            metrics.uploads_too_slow.clone(),
        );
        registry.register(
            "held_requests",
            "Requests held waiting for the live edge now (blocking playlist reloads, early segment requests, parts not yet complete)",
            metrics.held.clone(),
        );
        registry.register(
            "held_requests_refused",
            "Requests refused (503) for --max-held-requests or its share per peer",
            metrics.held_refused.clone(),
        );
        registry.register(
            "dvr_deletes_deferred",
            "Encoder DELETEs of segments answered 202 and left to the DVR window (--dvr-window), which removes them once they age out",
            metrics.dvr_deferred.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(store.clone())));
        Metrics { registry, ..metrics }
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Index of a request's HTTP version in the `version` label ("1.1" also counts HTTP/1.0).
    fn version_index(version: http::Version) -> usize {
        match version {
            http::Version::HTTP_2 => 1,
            http::Version::HTTP_3 => 2,
            _ => 0,
        }
    }

    /// The counter of request body bytes for `version` (take it once per request, add per chunk).
    pub fn received(&self, version: http::Version) -> Counter {
        self.received[Self::version_index(version)].clone()
    }

    /// What a response body updates as it is sent over `version`.
    pub fn body_meter(&self, version: http::Version) -> BodyMeter {
        BodyMeter {
            sent: self.sent[Self::version_index(version)].clone(),
            relay_delay: self.relay_delay.clone(),
            slow_cut: self.slow_cut.clone(),
        }
    }

    /// Counts one response with `status` (statuses below 200 are not counted).
    pub fn response(&self, status: http::StatusCode) {
        let class = match status.as_u16() {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => return,
        };
        self.responses[class].inc();
    }

    /// Counts a download attached to a growing entry while the guard lives.
    pub fn growing_reader(&self) -> GaugeGuard {
        GaugeGuard::new(&self.growing_readers)
    }

    /// Counts an LL-HLS blocking playlist request in progress while the guard lives.
    pub fn hls_blocking(&self) -> GaugeGuard {
        GaugeGuard::new(&self.hls_blocking)
    }

    /// Counts a CMAF ingest track in progress while the guard lives.
    pub fn ingest_track(&self) -> GaugeGuard {
        GaugeGuard::new(&self.ingest_tracks)
    }

    /// Counts what an ended CMAF ingest track delivered: its chunks, and whether it was refused.
    pub fn ingest_ended(&self, chunks: u64, refused: bool) {
        self.ingest_chunks.inc_by(chunks);
        if refused {
            self.ingest_refused.inc();
        }
    }

    /// What the QUIC listener counts: its connections, handshakes, Retries and refusals.
    pub fn quic(&self) -> QuicMeter {
        self.quic.clone()
    }

    /// Counts an upload refused for its peer's share of the upload slots.
    pub fn upload_over_share(&self) {
        self.uploads_over_share.inc();
    }

    /// Counts a request held waiting for the live edge while the guard lives.
    pub fn held(&self) -> GaugeGuard {
        GaugeGuard::new(&self.held)
    }

    /// Counts a request refused for the held-request bounds.
    pub fn held_refused(&self) {
        self.held_refused.inc();
    }

    /// Counts a DELETE left to the DVR window.
    pub fn dvr_delete_deferred(&self) {
        self.dvr_deferred.inc();
    }

    /// Counts an upload cut for its rate.
    pub fn upload_too_slow(&self) {
        self.uploads_too_slow.inc();
    }

    /// Counts an early request as held, and as waiting while the guard lives.
    pub fn early_request(&self) -> GaugeGuard {
        self.early_held.inc();
        GaugeGuard::new(&self.early_waiting)
    }
}

/// Adds one to a gauge while it lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the QUIC listener updates: at most a few atomics per connection attempt.
#[derive(Debug, Clone, Default)]
pub struct QuicMeter {
    /// Connections open, handshaking or established.
    pub connections: Gauge,
    /// Handshakes in progress.
    pub handshakes: Gauge,
    /// Connection attempts answered with a Retry (address validation).
    pub retries: Counter,
    /// Connection attempts refused (a bound was reached).
    pub refused: Counter,
    /// Handshakes that did not complete within the handshake timeout.
    pub handshake_timeouts: Counter,
    /// HTTP/3 requests refused for a header block over --max-header-bytes.
    pub headers_refused: Counter,
}

impl QuicMeter {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "quic_connections",
            "QUIC connections open, handshaking or established (what --quic-max-connections limits)",
            self.connections.clone(),
        );
        registry.register(
            "quic_handshakes",
            "QUIC handshakes in progress (what --quic-max-handshakes limits)",
            self.handshakes.clone(),
        );
        registry.register(
            "quic_retries",
            "QUIC connection attempts answered with a Retry to validate the client's address (above --quic-retry-above handshakes)",
            self.retries.clone(),
        );
        registry.register(
            "quic_refused",
            "QUIC connection attempts refused at a bound (connections, handshakes, handshakes per peer)",
            self.refused.clone(),
        );
        registry.register(
            "quic_handshake_timeouts",
            "QUIC handshakes (with the HTTP/3 setup) not done within --quic-handshake-timeout",
            self.handshake_timeouts.clone(),
        );
        registry.register(
            "h3_headers_refused",
            "HTTP/3 requests refused (431) for a header block over --max-header-bytes",
            self.headers_refused.clone(),
        );
    }
}

/// The handles one response body updates per chunk: atomics only.
#[derive(Debug, Clone)]
pub struct BodyMeter {
    sent: Counter,
    relay_delay: RelayHistogram,
    slow_cut: Counter,
}

impl BodyMeter {
    /// `n` body bytes were handed to the transport; `delay` is the chunk's time since its append,
    /// for a chunk appended while the download was attached.
    pub fn sent(&self, n: usize, delay: Option<Duration>) {
        self.sent.inc_by(n as u64);
        if let Some(delay) = delay {
            self.relay_delay.observe(delay);
        }
    }

    /// The download was cut off for falling too far behind a growing entry.
    pub fn slow_reader_cut(&self) {
        self.slow_cut.inc();
    }
}

/// A histogram of durations with atomic buckets: an observation is a few relaxed atomic adds and
/// no lock. Encoded through `prometheus-client` as an ordinary histogram.
#[derive(Debug, Clone)]
pub struct RelayHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds in nanoseconds, ascending; the last bucket (+Inf) has no bound.
    bounds: Vec<u64>,
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl RelayHistogram {
    /// A histogram with upper bounds `bounds` in seconds (ascending), plus +Inf.
    pub fn new(bounds: &[f64]) -> Self {
        let bounds: Vec<u64> = bounds.iter().map(|s| (s * 1e9) as u64).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        RelayHistogram(Arc::new(HistogramCells {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Records one duration.
    pub fn observe(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let cells = &self.0;
        let bucket = cells.bounds.partition_point(|&bound| bound < nanos);
        if let Some(count) = cells.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// (upper bound in seconds, observations in that bucket alone), +Inf last.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let cells = &self.0;
        cells
            .bounds
            .iter()
            .map(|&nanos| nanos as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(cells.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }
}

impl EncodeMetric for RelayHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        // The count is the buckets' sum, so `_count` always equals the +Inf bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What the store counts, read at scrape time.
#[derive(Debug)]
struct StoreCollector(Store);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let gauges = [
            ("entries", "Paths stored (in memory or on disk).", stats.entries),
            (
                "memory_bytes",
                "Bytes of segment data held in memory.",
                stats.memory_bytes,
            ),
            (
                "stored_bytes",
                "Bytes of every stored path, in memory or on disk (a DVR window keeps hours of segments: docs/dvr.md).",
                stats.stored_bytes,
            ),
            ("uploads_in_progress", "Uploads being received.", stats.uploads),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            (
                "gc_purged_paths",
                "Paths purged by garbage collection (--ttl).",
                stats.purged,
            ),
            (
                "disk_write_errors",
                "Completed uploads that could not be persisted to the root folder.",
                stats.persist_errors,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_histogram_buckets_by_upper_bound() {
        let histogram = RelayHistogram::new(&[0.001, 0.01]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(3));
        assert_eq!(histogram.count(), 4);
        assert_eq!(
            histogram.buckets(),
            vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)],
            "a value equal to a bound falls into that bound's bucket"
        );
    }
}
