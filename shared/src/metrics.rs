//! Events that cost money or need an operator, as metrics: on Lambda an
//! EMF line on stdout (CloudWatch makes it a metric without an API call),
//! on the server a log event. A leaf: it imports nothing of ours.

use serde_json::json;

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
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        println!("{}", fallback_line(from, to, now_ms()));
    }
}

/// Fallbacks this process made, by (from, to): the admin view's.
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

fn fallback_line(from: &str, to: &str, timestamp_ms: u64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["From", "To"]],
                "Metrics": [{"Name": "UpstreamFallback", "Unit": "Count"}],
            }],
        },
        "From": from,
        "To": to,
        "UpstreamFallback": 1,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fallback_is_one_count_by_both_upstreams() {
        let line: serde_json::Value =
            serde_json::from_str(&super::fallback_line("minimax-code", "minimax-api", 5)).unwrap();
        assert_eq!(line["UpstreamFallback"], 1);
        assert_eq!(line["From"], "minimax-code");
        assert_eq!(line["To"], "minimax-api");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][1],
            "To"
        );
    }
}
