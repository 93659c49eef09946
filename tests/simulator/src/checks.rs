//! The simulator's own reading of the protocols: query, time, signature and
//! header rules from `hailuo-web-protocol.md` and `minimax-agent-protocol.md`,
//! implemented independently of the client so that a client bug cannot hide
//! behind a shared helper.

use std::collections::HashMap;

use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const JS_URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

pub fn md5_hex(data: impl AsRef<[u8]>) -> String {
    Md5::digest(data.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn yy(uri_with_query: &str, data: &str, unix: &str) -> String {
    let encoded = utf8_percent_encode(uri_with_query, JS_URI_COMPONENT).to_string();
    md5_hex(format!("{encoded}_{data}{}ooui", md5_hex(unix)))
}

/// A protocol's query: keys in order, with the fixed value of each (`None`
/// for per-call values), which keys may be left out, and whether `unix` is
/// rounded down to the second.
pub struct QuerySpec {
    pub keys: &'static [(&'static str, Option<&'static str>)],
    pub optional: &'static [&'static str],
    pub rounded_unix: bool,
}

pub const HAILUO_QUERY: QuerySpec = QuerySpec {
    keys: &[
        ("device_platform", Some("web")),
        ("app_id", Some("3001")),
        ("version_code", Some("22200")),
        ("uuid", None),
        ("device_id", None),
        ("os_name", Some("Windows")),
        ("browser_name", Some("chrome")),
        ("device_memory", Some("8")),
        ("cpu_core_num", Some("12")),
        ("browser_language", Some("zh-CN")),
        ("browser_platform", Some("Win32")),
        ("screen_width", Some("1920")),
        ("screen_height", Some("1080")),
        ("unix", None),
    ],
    optional: &["device_id"],
    rounded_unix: true,
};

pub const AGENT_QUERY: QuerySpec = QuerySpec {
    keys: &[
        ("device_platform", Some("web")),
        ("biz_id", Some("3")),
        ("app_id", Some("3001")),
        ("version_code", Some("22201")),
        ("uuid", None),
        ("device_id", None),
        ("os_name", Some("Mac")),
        ("browser_name", Some("chrome")),
        ("device_memory", Some("8")),
        ("cpu_core_num", Some("11")),
        ("browser_language", Some("zh-CN")),
        ("browser_platform", Some("MacIntel")),
        ("user_id", None),
        ("screen_width", Some("1920")),
        ("screen_height", Some("1080")),
        ("unix", None),
        ("lang", Some("zh")),
        ("token", None),
        ("timezone_offset", Some("28800")),
        ("sys_language", Some("zh")),
        ("client", Some("web")),
    ],
    optional: &["device_id"],
    rounded_unix: false,
};

/// A checked query: the per-call values, and the part that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQuery {
    pub values: HashMap<&'static str, String>,
    /// From the first protocol key to the last, inclusive.
    pub signed_query: String,
    /// What precedes the protocol query (`msgID=…&timbre=…`), if anything.
    pub prefix: String,
}

impl ParsedQuery {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The URI as the client signed it.
    pub fn signed_uri(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            format!("{path}?{}", self.signed_query)
        } else {
            format!("{path}?{}&{}", self.prefix, self.signed_query)
        }
    }
}

/// Check a raw query string against `spec`.
pub fn parse_query(raw: &str, spec: &QuerySpec, now_ms: u128) -> Result<ParsedQuery, String> {
    let pairs: Vec<(&str, &str)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let first = spec.keys[0].0;
    let start = pairs
        .iter()
        .position(|(k, _)| *k == first)
        .ok_or(format!("query has no {first}"))?;
    let prefix = pairs[..start]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut i = start;
    let mut values = HashMap::new();
    for (key, fixed) in spec.keys {
        let Some((k, v)) = pairs.get(i) else {
            return Err(format!("query ends before `{key}`"));
        };
        if k != key {
            if spec.optional.contains(key) {
                continue;
            }
            return Err(format!(
                "query key #{} is `{k}`, expected `{key}` (keys must be in protocol order)",
                i - start + 1
            ));
        }
        match fixed {
            Some(fixed) if v != fixed => {
                return Err(format!("query `{key}` is `{v}`, expected `{fixed}`"))
            }
            Some(_) => {}
            None if v.is_empty() => {
                return Err(format!(
                    "query `{key}` is present but empty (leave it out instead)"
                ))
            }
            None => {
                values.insert(*key, v.to_string());
            }
        }
        i += 1;
    }
    // After the last key, only a repeat of protocol keys is tolerated (the
    // reference Hailuo client's quirk, which the service accepted).
    for (k, _) in &pairs[i..] {
        if !spec.keys.iter().any(|(q, _)| q == k) {
            return Err(format!(
                "unexpected query key `{k}` after the protocol query"
            ));
        }
    }
    check_unix(
        values.get("unix").map(String::as_str).unwrap_or(""),
        now_ms,
        spec.rounded_unix,
    )?;
    let signed_query = pairs[start..i]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    Ok(ParsedQuery {
        values,
        signed_query,
        prefix,
    })
}

/// `unix`: milliseconds (rounded down to the second where the protocol says
/// so), close to now.
pub fn check_unix(unix: &str, now_ms: u128, rounded: bool) -> Result<(), String> {
    let ms: u128 = unix
        .parse()
        .map_err(|_| format!("`unix` is not a number: {unix:?}"))?;
    if rounded && !unix.ends_with("000") {
        return Err(format!(
            "`unix` {unix} is not rounded down to a whole second"
        ));
    }
    let skew = now_ms.abs_diff(ms);
    if skew > 5 * 60 * 1000 {
        return Err(format!("`unix` {unix} is {} s away from now", skew / 1000));
    }
    Ok(())
}

pub fn fingerprint(token: &str) -> String {
    use sha2::Sha256;
    sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(token.as_bytes()))[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `user.id` of a JWT's payload, if it has one.
pub fn jwt_user_id(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("user")?.get("id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "device_platform=web&app_id=3001&version_code=22200&uuid=u&device_id=7&os_name=Windows&browser_name=chrome&device_memory=8&cpu_core_num=12&browser_language=zh-CN&browser_platform=Win32&screen_width=1920&screen_height=1080&unix=1714751477000";
    const NOW: u128 = 1714751477500;

    #[test]
    fn accepts_the_hailuo_query() {
        let p = parse_query(Q, &HAILUO_QUERY, NOW).unwrap();
        assert_eq!(p.get("uuid"), Some("u"));
        assert_eq!(p.get("device_id"), Some("7"));
        assert_eq!(p.signed_uri("/x"), format!("/x?{Q}"));
        let with_prefix = format!("msgID=1&timbre=a&{Q}");
        let p = parse_query(&with_prefix, &HAILUO_QUERY, NOW).unwrap();
        assert_eq!(p.signed_uri("/x"), format!("/x?{with_prefix}"));
        // The duplicate device parameters of the reference client are tolerated.
        assert!(parse_query(&format!("{Q}&uuid=u&device_id=7"), &HAILUO_QUERY, NOW).is_ok());
        let unregistered = Q.replace("&device_id=7", "");
        assert_eq!(
            parse_query(&unregistered, &HAILUO_QUERY, NOW)
                .unwrap()
                .get("device_id"),
            None
        );
    }

    #[test]
    fn refuses_wrong_order_values_and_time() {
        let swapped = Q.replace(
            "app_id=3001&version_code=22200",
            "version_code=22200&app_id=3001",
        );
        assert!(parse_query(&swapped, &HAILUO_QUERY, NOW)
            .unwrap_err()
            .contains("order"));
        assert!(parse_query(&Q.replace("Win32", "MacIntel"), &HAILUO_QUERY, NOW).is_err());
        assert!(parse_query(
            &Q.replace("1714751477000", "1714751477123"),
            &HAILUO_QUERY,
            NOW
        )
        .is_err());
        assert!(parse_query(Q, &HAILUO_QUERY, NOW + 3_600_000).is_err());
        assert!(parse_query(&format!("{Q}&extra=1"), &HAILUO_QUERY, NOW).is_err());
        assert!(parse_query(&Q.replace("device_id=7", "device_id="), &HAILUO_QUERY, NOW).is_err());
    }

    #[test]
    fn agent_query_and_jwt() {
        let q = "device_platform=web&biz_id=3&app_id=3001&version_code=22201&uuid=300000000000007919&device_id=400000000000000001&os_name=Mac&browser_name=chrome&device_memory=8&cpu_core_num=11&browser_language=zh-CN&browser_platform=MacIntel&user_id=300000000000007919&screen_width=1920&screen_height=1080&unix=1764000001457&lang=zh&token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyIjp7ImlkIjoiMzAwMDAwMDAwMDAwMDA3OTE5IiwibmFtZSI6InUxIn0sImV4cCI6MTkwMDAwMDAwMX0.47718ea6a6a41ceb9e932111bdad0b8c&timezone_offset=28800&sys_language=zh&client=web";
        let p = parse_query(q, &AGENT_QUERY, 1764000001000).unwrap();
        assert_eq!(p.get("user_id"), Some("300000000000007919"));
        assert_eq!(
            jwt_user_id(p.get("token").unwrap()).as_deref(),
            Some("300000000000007919")
        );
        assert_eq!(
            yy(&p.signed_uri("/v1/api/user/info"), "{}", "1764000001457"),
            "f8f8744b28cd0f562dd48ed4301338c5"
        );
        assert!(parse_query(&q.replace("biz_id=3&", ""), &AGENT_QUERY, 1764000001000).is_err());
    }

    #[test]
    fn yy_matches_a_published_vector() {
        let uri = "/v1/api/user/device/register?device_platform=web&app_id=3001&version_code=22200&uuid=69378ea42536b0b809cf3db2688cd4ff&os_name=Windows&browser_name=chrome&device_memory=8&cpu_core_num=12&browser_language=zh-CN&browser_platform=Win32&screen_width=1920&screen_height=1080&unix=1714751471000";
        assert_eq!(
            yy(
                uri,
                r#"{"uuid":"69378ea42536b0b809cf3db2688cd4ff"}"#,
                "1714751471000"
            ),
            "f9adfeffbdad0d5fffc1b4409a2487a8"
        );
    }
}
