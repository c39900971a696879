//! The service's Prometheus metrics (prometheus-client: typed label sets, no global
//! registry, OpenMetrics text). Fed by the drivers from what the sans-IO core reports —
//! events, end-of-call records, the bytes on the wire — never from inside the core.
//!
//! Label values are bounded: methods and status classes are fixed sets, organizations come
//! from the configuration (a refused INVITE that matched none is `unknown`), outcomes are
//! the audit result names. Never a caller number, a Call-ID or a digit.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// The frame-lateness buckets' upper bounds, in seconds.
const FRAME_LATENESS_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.2,
    0.5, 1.0,
];

/// A histogram fed in bulk: each call loop counts into its own `LocalHistogram` (plain
/// memory) and adds it here about once a second. `Histogram::observe` takes a lock, and
/// per RTP frame that lock, bounced between the loops' cores, cost more than the frame.
#[derive(Clone, Debug)]
pub struct BulkHistogram {
    bounds: Arc<[f64]>,
    inner: Arc<Mutex<BulkInner>>,
}

#[derive(Debug, Default)]
struct BulkInner {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), one more than `bounds` (+Inf).
    counts: Vec<u64>,
}

impl BulkHistogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds.collect();
        let counts = vec![0; bounds.len() + 1];
        BulkHistogram {
            bounds,
            inner: Arc::new(Mutex::new(BulkInner {
                counts,
                ..Default::default()
            })),
        }
    }

    /// A local histogram with these buckets, for one loop.
    pub fn local(&self) -> LocalHistogram {
        LocalHistogram {
            bounds: self.bounds.clone(),
            counts: vec![0; self.bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds what `local` counted since its last flush, and empties it.
    pub fn flush(&self, local: &mut LocalHistogram) {
        if local.count == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.sum += local.sum;
        inner.count += local.count;
        for (a, b) in inner.counts.iter_mut().zip(local.counts.iter_mut()) {
            *a += std::mem::take(b);
        }
        local.sum = 0.0;
        local.count = 0;
    }
}

impl EncodeMetric for BulkHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let buckets: Vec<(f64, u64)> = self
                .bounds
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(inner.counts.iter().copied())
                .collect();
            (inner.sum, inner.count, buckets)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One loop's share of a `BulkHistogram`, counted without locks or atomics.
#[derive(Debug)]
pub struct LocalHistogram {
    bounds: Arc<[f64]>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        let i = self.bounds.partition_point(|b| *b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub organization: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrmLabels {
    pub adapter: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabels {
    pub adapter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A `sip::gate::Rejection` name (a fixed set).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SipLabels {
    /// `in` (received) or `out` (sent).
    pub direction: &'static str,
    /// A request method (fixed set, else `other`) or a response class (`1xx`..`6xx`).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendFailureLabels {
    pub transport: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub revision: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// Every metric the service exports.
pub struct Metrics {
    pub registry: Registry,
    pub calls_in_progress: Gauge,
    pub calls: Family<CallLabels, Counter>,
    pub calls_panicked: Counter,
    pub loop_restarts: Counter,
    pub digits: Family<SourceLabels, Counter>,
    pub crm_requests: Family<CrmLabels, Counter>,
    pub crm_latency: Family<AdapterLabels, Histogram, fn() -> Histogram>,
    pub refers: Family<ResultLabels, Counter>,
    pub entry_to_refer: Histogram,
    pub sip_messages: Family<SipLabels, Counter>,
    pub parse_errors: Counter,
    pub send_failures: Family<SendFailureLabels, Counter>,
    pub overload_rejections: Counter,
    pub draining_rejections: Counter,
    pub rejections: Family<ReasonLabels, Counter>,
    pub rtp_wrong_source: Counter,
    pub lockouts_active: Gauge,
    pub rtp_packets: Family<DirectionLabels, Counter>,
    pub rtp_late_skipped: Counter,
    pub frame_lateness: BulkHistogram,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_loaded: Gauge<f64, AtomicU64>,
    pub config_age: Gauge<f64, AtomicU64>,
    pub build_info: Family<BuildLabels, Gauge>,
}

/// The version and git revision this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("PINCODEROUTING_GIT_REVISION");

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("pincoderouting");
        let m = Metrics {
            calls_in_progress: Gauge::default(),
            calls: Family::default(),
            calls_panicked: Counter::default(),
            loop_restarts: Counter::default(),
            digits: Family::default(),
            crm_requests: Family::default(),
            crm_latency: Family::new_with_constructor(latency_histogram),
            refers: Family::default(),
            entry_to_refer: latency_histogram(),
            sip_messages: Family::default(),
            parse_errors: Counter::default(),
            send_failures: Family::default(),
            overload_rejections: Counter::default(),
            draining_rejections: Counter::default(),
            rejections: Family::default(),
            rtp_wrong_source: Counter::default(),
            lockouts_active: Gauge::default(),
            rtp_packets: Family::default(),
            rtp_late_skipped: Counter::default(),
            // 0.1 ms .. 1 s, with a bound at every millisecond up to 5 ms: a p99 judged
            // against 5 ms is read from a bucket edge, not guessed inside 3.2–6.4 ms.
            frame_lateness: BulkHistogram::new(FRAME_LATENESS_BOUNDS.iter().copied()),
            config_reloads: Family::default(),
            config_loaded: Gauge::default(),
            config_age: Gauge::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "calls_in_progress",
            "Calls now up (admitted, not yet ended)",
            m.calls_in_progress.clone(),
        );
        r.register(
            "calls",
            "Calls ended or refused, by organization and outcome (the audit record's result)",
            m.calls.clone(),
        );
        r.register(
            "calls_panicked",
            "Calls ended by a bug in their own code (each ended alone)",
            m.calls_panicked.clone(),
        );
        r.register(
            "receive_loop_restarts",
            "SIP receive loops restarted after a panic",
            m.loop_restarts.clone(),
        );
        r.register("digits", "Digits received, by source", m.digits.clone());
        r.register(
            "crm_requests",
            "CRM requests by adapter and outcome",
            m.crm_requests.clone(),
        );
        r.register(
            "crm_request_duration_seconds",
            "CRM request latency by adapter",
            m.crm_latency.clone(),
        );
        r.register(
            "refers",
            "Transfers (REFER) by result: transferred or failed",
            m.refers.clone(),
        );
        r.register(
            "pin_entry_to_refer_seconds",
            "From the caller's last key (#) to our REFER: what a caller waits for the transfer",
            m.entry_to_refer.clone(),
        );
        r.register(
            "sip_messages",
            "SIP messages by direction and method (requests) or status class (responses)",
            m.sip_messages.clone(),
        );
        r.register(
            "sip_parse_errors",
            "SIP messages that could not be parsed (answered 400/413 or dropped)",
            m.parse_errors.clone(),
        );
        r.register(
            "sip_send_failures",
            "SIP messages we could not send, by transport and reason (send_error, \
             backlog_full, connect_failed, too_many_connections)",
            m.send_failures.clone(),
        );
        r.register(
            "overload_rejections",
            "INVITEs refused 503 because max_calls were up (or no RTP port was free)",
            m.overload_rejections.clone(),
        );
        r.register(
            "draining_rejections",
            "INVITEs and OPTIONS answered 503 while draining",
            m.draining_rejections.clone(),
        );
        r.register(
            "sip_rejections",
            "SIP messages turned away by the access policy, by reason: not_allowed, \
             org_not_allowed, request_rate, call_rate, source_calls, auth",
            m.rejections.clone(),
        );
        r.register(
            "rtp_wrong_source",
            "RTP packets dropped because they came from other than the latched address",
            m.rtp_wrong_source.clone(),
        );
        r.register(
            "lockouts_active",
            "Caller numbers and contacts locked out now",
            m.lockouts_active.clone(),
        );
        r.register(
            "rtp_packets",
            "RTP packets by direction (in: accepted from the PBX)",
            m.rtp_packets.clone(),
        );
        r.register(
            "rtp_late_frames_skipped",
            "Outgoing frames skipped because the call woke too late",
            m.rtp_late_skipped.clone(),
        );
        r.register(
            "rtp_frame_lateness_seconds",
            "How late outgoing RTP frames left against their schedule",
            m.frame_lateness.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result (ok, failed)",
            m.config_reloads.clone(),
        );
        r.register(
            "config_loaded_timestamp_seconds",
            "When the running configuration was loaded (Unix time)",
            m.config_loaded.clone(),
        );
        r.register(
            "config_age_seconds",
            "How long ago the running configuration was loaded",
            m.config_age.clone(),
        );
        r.register(
            "build_info",
            "Version and git revision of this binary",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: VERSION,
                revision: REVISION,
            })
            .set(1);
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// Creates every series whose labels are known in advance at zero, so dashboards and
    /// alerts see 0 rather than nothing (organizations come from the configuration).
    pub fn init_series(&self, organizations: &[String]) {
        const OUTCOMES: [&str; 11] = [
            "verified",
            "wrong_pin",
            "no_input",
            "unknown_caller",
            "anonymous",
            "crm_error",
            "locked_out",
            "lockout_unavailable",
            "not_activated",
            "abandoned",
            "refused",
        ];
        for organization in organizations {
            for outcome in OUTCOMES {
                let _ = self.calls.get_or_create(&CallLabels {
                    organization: organization.clone(),
                    outcome: outcome.to_string(),
                });
            }
        }
        for source in ["rfc4733", "inband", "info"] {
            let _ = self.digits.get_or_create(&SourceLabels { source });
        }
        for (transport, reason) in [
            ("udp", "send_error"),
            ("tcp", "connect_failed"),
            ("tcp", "backlog_full"),
            ("tcp", "too_many_connections"),
        ] {
            let _ = self
                .send_failures
                .get_or_create(&SendFailureLabels { transport, reason });
        }
        for adapter in ["file", "http_lookup", "http_verify"] {
            let _ = self.crm_latency.get_or_create(&AdapterLabels { adapter });
            for outcome in ["found", "not_found", "ambiguous", "error"] {
                let _ = self
                    .crm_requests
                    .get_or_create(&CrmLabels { adapter, outcome });
            }
        }
        for result in ["transferred", "failed"] {
            let _ = self.refers.get_or_create(&ResultLabels { result });
        }
        for result in ["ok", "failed"] {
            let _ = self.config_reloads.get_or_create(&ResultLabels { result });
        }
        for direction in ["in", "out"] {
            let _ = self
                .rtp_packets
                .get_or_create(&DirectionLabels { direction });
            for kind in METHODS
                .iter()
                .chain(&["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"])
            {
                let _ = self
                    .sip_messages
                    .get_or_create(&SipLabels { direction, kind });
            }
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a message turned away by the access policy.
    pub fn rejected(&self, why: crate::sip::gate::Rejection) {
        self.rejections
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts a SIP message that could not be sent (`reason`: a fixed word).
    pub fn send_failed(&self, transport: crate::config::Transport, reason: &'static str) {
        let transport = match transport {
            crate::config::Transport::Udp => "udp",
            crate::config::Transport::Tcp => "tcp",
        };
        self.send_failures
            .get_or_create(&SendFailureLabels { transport, reason })
            .inc();
    }

    /// Counts one SIP message from its first bytes: a request by method (a fixed set, so a
    /// peer cannot make up label values), a response by status class.
    pub fn sip(&self, direction: &'static str, data: &[u8]) {
        let kind = sip_kind(data);
        self.sip_messages
            .get_or_create(&SipLabels { direction, kind })
            .inc();
    }
}

const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "PRACK",
    "MESSAGE",
    "PUBLISH",
];

/// The bounded label for a SIP message's first line.
pub fn sip_kind(data: &[u8]) -> &'static str {
    if let Some(rest) = data.strip_prefix(b"SIP/2.0 ") {
        return match rest.first() {
            Some(b'1') => "1xx",
            Some(b'2') => "2xx",
            Some(b'3') => "3xx",
            Some(b'4') => "4xx",
            Some(b'5') => "5xx",
            Some(b'6') => "6xx",
            _ => "other",
        };
    }
    let token = data.split(|b| *b == b' ').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| m.as_bytes() == token)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lateness_flushed_from_loops_reads_as_a_prometheus_histogram() {
        let m = Metrics::default();
        let mut a = m.frame_lateness.local();
        let mut b = m.frame_lateness.local();
        a.observe(0.00005);
        a.observe(0.003);
        b.observe(10.0); // past every bound: only +Inf counts it
        m.frame_lateness.flush(&mut a);
        m.frame_lateness.flush(&mut b);
        m.frame_lateness.flush(&mut a); // nothing new: no change
        let text = m.encode();
        let line = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("pincoderouting_rtp_frame_lateness_seconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("no le={le} bucket in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(line("0.0001"), "1");
        assert_eq!(line("0.003"), "2");
        assert_eq!(line("0.005"), "2", "the target's 5 ms is a bucket edge");
        assert_eq!(line("+Inf"), "3");
        assert!(text.contains("pincoderouting_rtp_frame_lateness_seconds_count 3"));
    }

    #[test]
    fn labels_are_bounded_and_text_is_prometheus() {
        assert_eq!(sip_kind(b"INVITE sip:x SIP/2.0\r\n"), "INVITE");
        assert_eq!(sip_kind(b"SIP/2.0 486 Busy\r\n"), "4xx");
        assert_eq!(sip_kind(b"X-EVIL-123 sip:x SIP/2.0\r\n"), "other");
        assert_eq!(sip_kind(b""), "other");
        let m = Metrics::default();
        m.sip("in", b"OPTIONS sip:x SIP/2.0\r\n");
        m.calls
            .get_or_create(&CallLabels {
                organization: "acme".into(),
                outcome: "verified".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("pincoderouting_sip_messages_total{direction=\"in\",kind=\"OPTIONS\"} 1"),
            "{text}"
        );
        assert!(text
            .contains("pincoderouting_calls_total{organization=\"acme\",outcome=\"verified\"} 1"));
        assert!(text.contains("pincoderouting_build_info{"));
    }
}
