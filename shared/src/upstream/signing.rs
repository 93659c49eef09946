//! Request signatures: `Yy` (Hailuo protocol section 3, shared by the MiniMax
//! Agent protocol) and the agent's `x-signature`.

use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters JavaScript's `encodeURIComponent` leaves alone, besides ASCII alphanumerics.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Lowercase hex MD5.
pub fn md5_hex(data: impl AsRef<[u8]>) -> String {
    let digest = Md5::digest(data.as_ref());
    let mut out = String::with_capacity(32);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// JavaScript's `encodeURIComponent`.
pub fn encode_uri_component(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// The outer formula shared by every kind of call.
fn outer(uri_with_query: &str, data: &str, unix: &str) -> String {
    md5_hex(format!(
        "{}_{}{}ooui",
        encode_uri_component(uri_with_query),
        data,
        md5_hex(unix)
    ))
}

/// `Yy` of a JSON call: `full_uri` is path + `?` + query, `body_json` the exact
/// text sent (`{}` for an empty body).
pub fn yy_json(full_uri: &str, body_json: &str, unix: &str) -> String {
    outer(full_uri, body_json, unix)
}

/// The MiniMax Agent's `x-signature`: `md5(timestamp + JWT + body_json)`.
pub fn x_signature(timestamp: &str, jwt: &str, body_json: &str) -> String {
    md5_hex(format!("{timestamp}{jwt}{body_json}"))
}

/// `Yy` of the multipart chat call.
pub fn yy_chat_form(
    full_uri: &str,
    character_id: &str,
    msg_content: &str,
    chat_id: &str,
    form: Option<&str>,
    unix: &str,
) -> String {
    let flat: String = msg_content
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let data = format!(
        "{}{}{}{}",
        md5_hex(character_id),
        md5_hex(flat),
        md5_hex(chat_id),
        md5_hex(form.unwrap_or(""))
    );
    outer(full_uri, &data, unix)
}

/// `Yy` of the multipart voice call: the audio is signed by its first 1024 bytes.
pub fn yy_voice_form(
    full_uri: &str,
    character_id: &str,
    chat_id: &str,
    audio: &[u8],
    unix: &str,
) -> String {
    let data = format!(
        "{}{}{}",
        md5_hex(character_id),
        md5_hex(chat_id),
        md5_hex(&audio[..audio.len().min(1024)])
    );
    outer(full_uri, &data, unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::hailuo::config::DeviceProfile;
    use crate::upstream::hailuo::device_query::DeviceQuery;
    use serde_json::Value;

    #[test]
    fn encode_uri_component_matches_javascript() {
        assert_eq!(encode_uri_component("/a?b=c&d"), "%2Fa%3Fb%3Dc%26d");
        assert_eq!(encode_uri_component("AZaz09-_.!~*'()"), "AZaz09-_.!~*'()");
        assert_eq!(encode_uri_component("海 +"), "%E6%B5%B7%20%2B");
    }

    #[test]
    fn md5_is_lowercase_hex() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    /// Every vector in `yy-vectors.json`, reproduced from its parts: the query
    /// is rebuilt by our own builder, so the test covers key order too.
    #[test]
    fn reproduces_every_yy_vector() {
        let vectors: Vec<Value> =
            serde_json::from_str(include_str!("../../testdata/yy-vectors.json")).unwrap();
        assert_eq!(vectors.len(), 10);
        let profile = DeviceProfile::default();
        for v in &vectors {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let device_id = v["device_id"].as_str();
            let query = DeviceQuery::new(&profile, &s("uuid"), device_id, &s("unix"));
            let full_uri = query.append_to(&s("uri"));
            assert_eq!(full_uri, s("full_uri"), "full_uri of {}", s("uri"));
            let yy = match v["kind"].as_str().unwrap() {
                "json" => yy_json(&full_uri, &s("body_json"), &s("unix")),
                "chat_form" => {
                    let f = &v["fields"];
                    yy_chat_form(
                        &full_uri,
                        f["characterID"].as_str().unwrap(),
                        f["msgContent"].as_str().unwrap(),
                        f["chatID"].as_str().unwrap(),
                        f["form"].as_str(),
                        &s("unix"),
                    )
                }
                "voice_form" => {
                    let f = &v["fields"];
                    let hex = s("voice_bytes_hex");
                    let audio: Vec<u8> = (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect();
                    assert!(audio.len() > 1024, "the vector covers the 1024-byte cut");
                    yy_voice_form(
                        &full_uri,
                        f["characterID"].as_str().unwrap(),
                        f["chatID"].as_str().unwrap(),
                        &audio,
                        &s("unix"),
                    )
                }
                other => panic!("unknown vector kind {other}"),
            };
            assert_eq!(yy, s("yy"), "yy of {} ({})", s("uri"), v["kind"]);
        }
    }
}
