//! Query strings the upstreams sign: keys in a fixed order, values as they
//! are, keys without a value left out.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn join_query(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("&")
}

/// `path?query`, or `path?existing&query` when the path has a query already.
pub fn append_query(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

/// Milliseconds since the epoch.
pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_in_order_and_skips_empty() {
        assert_eq!(
            join_query(&[
                ("a", Some("1")),
                ("b", None),
                ("c", Some("")),
                ("d", Some("x"))
            ]),
            "a=1&d=x"
        );
        assert_eq!(append_query("/p", "a=1"), "/p?a=1");
        assert_eq!(append_query("/p?m=2", "a=1"), "/p?m=2&a=1");
    }
}
