//! The query string every agent call carries (protocol section 2).

use crate::upstream::query_string::join_query;

/// The query every call carries, keys in protocol order.
pub fn agent_query(
    version_code: &str,
    uuid: &str,
    device_id: Option<&str>,
    user_id: &str,
    unix: &str,
    jwt: &str,
) -> String {
    join_query(&[
        ("device_platform", Some("web")),
        ("biz_id", Some("3")),
        ("app_id", Some("3001")),
        ("version_code", Some(version_code)),
        ("uuid", Some(uuid)),
        ("device_id", device_id),
        ("os_name", Some("Mac")),
        ("browser_name", Some("chrome")),
        ("device_memory", Some("8")),
        ("cpu_core_num", Some("11")),
        ("browser_language", Some("zh-CN")),
        ("browser_platform", Some("MacIntel")),
        ("user_id", Some(user_id)),
        ("screen_width", Some("1920")),
        ("screen_height", Some("1080")),
        ("unix", Some(unix)),
        ("lang", Some("zh")),
        ("token", Some(jwt)),
        ("timezone_offset", Some("28800")),
        ("sys_language", Some("zh")),
        ("client", Some("web")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::query_string::append_query;
    use crate::upstream::signing::{x_signature, yy_json};
    use serde_json::Value;

    /// Every vector in `agent-vectors.json`: the URI rebuilt by our query
    /// builder, then both signatures.
    #[test]
    fn reproduces_every_agent_vector() {
        let doc: Value =
            serde_json::from_str(include_str!("../../../testdata/agent-vectors.json")).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 6);
        for v in vectors {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let query = agent_query(
                "22201",
                &s("uuid"),
                v["device_id"].as_str(),
                &s("user_id"),
                &s("unix"),
                &s("token"),
            );
            let full_uri = append_query(&s("uri"), &query);
            assert_eq!(full_uri, s("full_uri"), "full_uri of {}", s("uri"));
            assert_eq!(
                yy_json(&full_uri, &s("body_json"), &s("unix")),
                s("yy"),
                "yy of {}",
                s("uri")
            );
            assert_eq!(
                s("timestamp"),
                (s("unix").parse::<u64>().unwrap() / 1000).to_string()
            );
            assert_eq!(
                x_signature(&s("timestamp"), &s("token"), &s("body_json")),
                s("x_signature"),
                "x-signature of {}",
                s("uri")
            );
        }
    }
}
