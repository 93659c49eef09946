//! The simulator's own reading of the protocol: query, time, signature and
//! header rules from `hailuo-web-protocol.md`, implemented independently of the
//! client so that a client bug cannot hide behind a shared helper.

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

/// The fixed values of the device query, in order; `None` marks the
/// per-device keys (uuid, device_id) and the time.
const QUERY: [(&str, Option<&str>); 14] = [
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
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceParams {
    pub uuid: String,
    pub device_id: Option<String>,
    pub unix: String,
    /// The query as signed: from the first device key to `unix`, inclusive.
    pub signed_query: String,
    /// What precedes the device query (`msgID=…&timbre=…`), if anything.
    pub prefix: String,
}

/// Check the raw query string. Returns the device parameters or what is wrong.
pub fn parse_device_query(raw: &str, now_ms: u128) -> Result<DeviceParams, String> {
    let pairs: Vec<(&str, &str)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let start = pairs
        .iter()
        .position(|(k, _)| *k == "device_platform")
        .ok_or("query has no device_platform")?;
    let prefix = pairs[..start]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut i = start;
    let mut uuid = None;
    let mut device_id = None;
    let mut unix = None;
    for (key, fixed) in QUERY {
        let Some((k, v)) = pairs.get(i) else {
            return Err(format!("query ends before `{key}`"));
        };
        if *k != key {
            if key == "device_id" {
                continue; // left out before registration
            }
            return Err(format!(
                "query key #{} is `{k}`, expected `{key}` (keys must be in protocol order)",
                i - start + 1
            ));
        }
        if let Some(fixed) = fixed {
            if *v != fixed {
                return Err(format!("query `{key}` is `{v}`, expected `{fixed}`"));
            }
        }
        match key {
            "uuid" => uuid = Some(v.to_string()),
            "device_id" => device_id = Some(v.to_string()),
            "unix" => unix = Some(v.to_string()),
            _ => {}
        }
        i += 1;
    }
    // Anything after `unix` may only be the observed duplicate of the device
    // parameters (the reference client's quirk), which the service tolerated.
    for (k, _) in &pairs[i..] {
        if !QUERY.iter().any(|(q, _)| q == k) {
            return Err(format!("unexpected query key `{k}` after `unix`"));
        }
    }
    let uuid = uuid
        .filter(|u| !u.is_empty())
        .ok_or("query `uuid` is empty")?;
    if device_id.as_deref() == Some("") {
        return Err("query `device_id` is present but empty (leave it out instead)".into());
    }
    let unix = unix.unwrap_or_default();
    check_unix(&unix, now_ms)?;
    let signed_query = pairs[start..i]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    Ok(DeviceParams {
        uuid,
        device_id,
        unix,
        signed_query,
        prefix,
    })
}

/// `unix`: milliseconds rounded down to the second, close to now.
pub fn check_unix(unix: &str, now_ms: u128) -> Result<(), String> {
    let ms: u128 = unix
        .parse()
        .map_err(|_| format!("`unix` is not a number: {unix:?}"))?;
    if !unix.ends_with("000") {
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

impl DeviceParams {
    /// The URI as the client signed it: path, `?`, any prefix query, the device query.
    pub fn signed_uri(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            format!("{path}?{}", self.signed_query)
        } else {
            format!("{path}?{}&{}", self.prefix, self.signed_query)
        }
    }
}

pub fn fingerprint(token: &str) -> String {
    use sha2::Sha256;
    sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(token.as_bytes()))[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "device_platform=web&app_id=3001&version_code=22200&uuid=u&device_id=7&os_name=Windows&browser_name=chrome&device_memory=8&cpu_core_num=12&browser_language=zh-CN&browser_platform=Win32&screen_width=1920&screen_height=1080&unix=1714751477000";
    const NOW: u128 = 1714751477500;

    #[test]
    fn accepts_the_protocol_query() {
        let p = parse_device_query(Q, NOW).unwrap();
        assert_eq!(p.uuid, "u");
        assert_eq!(p.device_id.as_deref(), Some("7"));
        assert_eq!(p.signed_uri("/x"), format!("/x?{Q}"));
        let with_prefix = format!("msgID=1&timbre=a&{Q}");
        let p = parse_device_query(&with_prefix, NOW).unwrap();
        assert_eq!(p.signed_uri("/x"), format!("/x?{with_prefix}"));
        // The duplicate device parameters of the reference client are tolerated.
        assert!(parse_device_query(&format!("{Q}&uuid=u&device_id=7"), NOW).is_ok());
    }

    #[test]
    fn refuses_wrong_order_values_and_time() {
        let swapped = Q.replace(
            "app_id=3001&version_code=22200",
            "version_code=22200&app_id=3001",
        );
        assert!(parse_device_query(&swapped, NOW)
            .unwrap_err()
            .contains("order"));
        assert!(parse_device_query(&Q.replace("Win32", "MacIntel"), NOW).is_err());
        assert!(parse_device_query(&Q.replace("1714751477000", "1714751477123"), NOW).is_err());
        assert!(parse_device_query(Q, NOW + 3_600_000).is_err());
        assert!(parse_device_query(&format!("{Q}&extra=1"), NOW).is_err());
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
