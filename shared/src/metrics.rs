//! The figures an operator watches, one way in, two ways out: on Lambda an
//! EMF line on stdout per event (CloudWatch makes it a metric without an API
//! call), on the server a Prometheus registry (`prometheus-client`, the
//! Prometheus project's own crate) read at `/metrics`. Both count the same
//! things: requests by route, status and upstream, with the time to the
//! response's head (for a stream, its first answer bytes) and to its end;
//! how long requests waited for an account; refreshes by outcome; fallbacks
//! between upstreams; requests no account could answer. The pool's states are
//! read when `/metrics` is (`encode`). A leaf: it imports nothing of ours.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::json;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabels {
    upstream: String,
    why: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    upstream: String,
    state: String,
}

fn seconds() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

struct Figures {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    first_byte: Family<RouteLabels, Histogram, fn() -> Histogram>,
    whole: Family<RouteLabels, Histogram, fn() -> Histogram>,
    lease_wait: Histogram,
    refreshes: Family<OutcomeLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    unanswerable: Family<WhyLabels, Counter>,
    accounts: Family<StateLabels, Gauge>,
}

static FIGURES: LazyLock<Figures> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("gateway");
    let figures = Figures {
        requests: Family::default(),
        first_byte: Family::new_with_constructor(seconds as fn() -> Histogram),
        whole: Family::new_with_constructor(seconds as fn() -> Histogram),
        lease_wait: seconds(),
        refreshes: Family::default(),
        fallbacks: Family::default(),
        unanswerable: Family::default(),
        accounts: Family::default(),
        registry: Registry::default(),
    };
    registry.register(
        "requests",
        "Requests by route, status and the upstream that served",
        figures.requests.clone(),
    );
    registry.register(
        "first_byte_seconds",
        "Time to the response's head (a stream's first answer bytes)",
        figures.first_byte.clone(),
    );
    registry.register(
        "response_seconds",
        "Time to the response's last byte",
        figures.whole.clone(),
    );
    registry.register(
        "lease_wait_seconds",
        "Time a request waited for an account of its pool",
        figures.lease_wait.clone(),
    );
    registry.register(
        "refreshes",
        "MiniMax Code refreshes by outcome",
        figures.refreshes.clone(),
    );
    registry.register(
        "upstream_fallbacks",
        "Requests served by a later upstream of the chain",
        figures.fallbacks.clone(),
    );
    registry.register(
        "unanswerable",
        "Requests no account of the pool could answer (all dead, cooling or busy)",
        figures.unanswerable.clone(),
    );
    registry.register(
        "accounts",
        "Accounts of the deployment by upstream and state",
        figures.accounts.clone(),
    );
    Figures {
        registry,
        ..figures
    }
});

fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
}

/// One request's answer: `first_byte` to its head, `whole` to its end.
pub(crate) fn request(
    route: &str,
    status: u16,
    upstream: &str,
    first_byte: Duration,
    whole: Duration,
) {
    let f = &*FIGURES;
    f.requests
        .get_or_create(&RequestLabels {
            route: route.into(),
            status,
            upstream: upstream.into(),
        })
        .inc();
    let r = RouteLabels {
        route: route.into(),
    };
    f.first_byte
        .get_or_create(&r)
        .observe(first_byte.as_secs_f64());
    f.whole.get_or_create(&r).observe(whole.as_secs_f64());
    if on_lambda() {
        println!(
            "{}",
            request_line(route, status, upstream, first_byte, whole, now_ms())
        );
    }
}

/// A request waited `waited` for an account (it got one, or gave up).
pub(crate) fn lease_waited(waited: Duration) {
    FIGURES.lease_wait.observe(waited.as_secs_f64());
}

/// A request no account of `upstream` could answer (`why`: `busy`,
/// `cooling`, `dead`): the pool's 503 or 429, or a move down the chain.
pub(crate) fn unanswerable(upstream: &str, why: &str) {
    FIGURES
        .unanswerable
        .get_or_create(&WhyLabels {
            upstream: upstream.into(),
            why: why.into(),
        })
        .inc();
    if on_lambda() {
        println!(
            "{}",
            count_line(
                "NoUsableAccount",
                &[("Upstream", upstream), ("Why", why)],
                now_ms()
            )
        );
    }
}

/// Refreshes of one maintenance run, by outcome (`renewed`, `dead`,
/// `failed`, `unsaved`).
pub(crate) fn refreshes(outcomes: &[(&str, usize)]) {
    for (outcome, n) in outcomes {
        FIGURES
            .refreshes
            .get_or_create(&OutcomeLabels {
                outcome: (*outcome).into(),
            })
            .inc_by(*n as u64);
    }
}

/// The Prometheus text of every figure, with the pool's states as given
/// (upstream, state, count) at this moment.
pub(crate) fn encode(accounts: &[(String, String, u64)]) -> String {
    let f = &*FIGURES;
    f.accounts.clear();
    for (upstream, state, n) in accounts {
        f.accounts
            .get_or_create(&StateLabels {
                upstream: upstream.clone(),
                state: state.clone(),
            })
            .set(*n as i64);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &f.registry).is_err() {
        out.clear();
    }
    out
}

fn request_line(
    route: &str,
    status: u16,
    upstream: &str,
    first_byte: Duration,
    whole: Duration,
    timestamp_ms: u64,
) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Route"], ["Route", "Status", "Upstream"]],
                "Metrics": [
                    {"Name": "Requests", "Unit": "Count"},
                    {"Name": "FirstByteMs", "Unit": "Milliseconds"},
                    {"Name": "ResponseMs", "Unit": "Milliseconds"},
                ],
            }],
        },
        "Route": route,
        "Status": status.to_string(),
        "Upstream": upstream,
        "Requests": 1,
        "FirstByteMs": first_byte.as_millis() as u64,
        "ResponseMs": whole.as_millis() as u64,
    })
    .to_string()
}

/// One count of `metric`, by its dimensions and in all (the empty set: what
/// the template's alarms watch).
fn count_line(metric: &str, dimensions: &[(&str, &str)], timestamp_ms: u64) -> String {
    let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[], names],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
    });
    for (k, v) in dimensions {
        line[*k] = json!(v);
    }
    line[metric] = json!(1);
    line.to_string()
}

/// The CloudWatch namespace of every metric the gateway emits.
pub(crate) const NAMESPACE: &str = "HailuoGateway";

/// A request served by a later upstream of the chain than `from` (every
/// account of `from` unable to answer now, `why`): logged always, and
/// counted as `UpstreamFallback` by `From` and `To` on Lambda.
pub(crate) fn fallback(from: &str, to: &str, why: &str) {
    {
        let mut counts = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((from.to_string(), to.to_string()))
            .or_default() += 1;
    }
    tracing::warn!(
        from,
        to,
        why,
        "upstream fallback: served by a later upstream of UPSTREAM"
    );
    if on_lambda() {
        println!(
            "{}",
            count_line("UpstreamFallback", &[("From", from), ("To", to)], now_ms())
        );
    }
}

/// Fallbacks this process made, by (from, to): the admin view reads them
/// (the registry's counters cannot be listed).
static FALLBACKS: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// This process's fallback counts: (from, to, count).
pub(crate) fn fallbacks() -> Vec<(String, String, u64)> {
    let counts = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    counts
        .iter()
        .map(|((from, to), n)| (from.clone(), to.clone(), *n))
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fallback_is_one_count_by_both_upstreams() {
        let line: serde_json::Value = serde_json::from_str(&super::count_line(
            "UpstreamFallback",
            &[("From", "minimax-code"), ("To", "minimax-api")],
            5,
        ))
        .unwrap();
        assert_eq!(line["UpstreamFallback"], 1);
        assert_eq!(line["From"], "minimax-code");
        assert_eq!(line["To"], "minimax-api");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1][1],
            "To"
        );
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!([]),
            "and in all"
        );
    }

    #[test]
    fn the_registry_counts_what_happened_and_the_pool_as_read() {
        use std::time::Duration;
        super::request(
            "/v1/chat/completions",
            200,
            "minimax-code",
            Duration::from_millis(120),
            Duration::from_secs(2),
        );
        super::fallback("minimax-code", "minimax-api", "throttled");
        super::fallback("minimax-code", "minimax-api", "throttled");
        let text = super::encode(&[("minimax-code".into(), "dead".into(), 2)]);
        assert!(text.contains(r#"gateway_requests_total{route="/v1/chat/completions",status="200",upstream="minimax-code"} "#), "{text}");
        assert!(text.contains("gateway_first_byte_seconds_bucket"), "{text}");
        assert!(
            text.contains(r#"gateway_accounts{upstream="minimax-code",state="dead"} 2"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics' end");
        let fallbacks = super::fallbacks();
        assert!(
            fallbacks
                .iter()
                .any(|(f, t, n)| f == "minimax-code" && t == "minimax-api" && *n >= 2),
            "{fallbacks:?}"
        );
        let line: serde_json::Value = serde_json::from_str(&super::request_line(
            "/v1/messages",
            429,
            "none",
            Duration::from_millis(5),
            Duration::from_millis(6),
            1,
        ))
        .unwrap();
        assert_eq!(
            (line["Status"].as_str(), line["Requests"].as_u64()),
            (Some("429"), Some(1))
        );
    }
}
