//! Response envelopes. `/v1/api/...` calls (both upstreams) answer
//! `{"statusInfo":{"code","message"},"data"}`; the MiniMax Agent's
//! `/matrix/api/...` calls answer top-level fields plus
//! `"base_resp":{"status_code","status_msg"}`.

use serde_json::Value;

use super::UpstreamError;

/// Longest upstream error text we repeat to a caller.
pub const MAX_ERROR_TEXT: usize = 300;

/// The useful part of a response: `data` of a `statusInfo` envelope, the whole
/// body of a `base_resp` one (or of a body with neither); an error when the
/// code is non-zero.
pub fn open_envelope(text: &str) -> Result<Value, UpstreamError> {
    let value: Value = serde_json::from_str(text).map_err(|_| {
        UpstreamError::Protocol(format!(
            "expected JSON, got {}",
            crate::text::summarize_body(text, MAX_ERROR_TEXT)
        ))
    })?;
    if let Some(status) = value.get("statusInfo") {
        let code = status.get("code").and_then(Value::as_i64).unwrap_or(-1);
        if code != 0 {
            let message = status.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(UpstreamError::Api {
                code,
                message: clip(message),
            });
        }
        return Ok(value.get("data").cloned().unwrap_or(Value::Null));
    }
    if let Some(status) = value.get("base_resp") {
        let code = status
            .get("status_code")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        if code != 0 {
            let message = status
                .get("status_msg")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(UpstreamError::Api {
                code,
                message: clip(message),
            });
        }
    }
    Ok(value)
}

/// Trimmed, and at most `MAX_ERROR_TEXT` characters.
pub fn clip(text: &str) -> String {
    crate::text::clip(text, MAX_ERROR_TEXT)
}

/// An id the upstream may send as a string or a number.
pub fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_info_envelopes() {
        assert_eq!(
            open_envelope(r#"{"statusInfo":{"code":0,"message":"成功"},"data":{"a":1}}"#).unwrap(),
            serde_json::json!({"a":1})
        );
        assert_eq!(
            open_envelope(r#"{"statusInfo":{"code":1004,"message":"登录已过期"}}"#).unwrap_err(),
            UpstreamError::Api {
                code: 1004,
                message: "登录已过期".into()
            }
        );
        assert_eq!(
            open_envelope(r#"{"x":2}"#).unwrap(),
            serde_json::json!({"x":2})
        );
        assert!(matches!(
            open_envelope("<html>"),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn base_resp_envelopes() {
        let ok = open_envelope(r#"{"chat_id":"1","base_resp":{"status_code":0,"status_msg":""}}"#)
            .unwrap();
        assert_eq!(ok["chat_id"], "1");
        assert_eq!(
            open_envelope(r#"{"base_resp":{"status_code":1,"status_msg":"chat is running"}}"#)
                .unwrap_err(),
            UpstreamError::Api {
                code: 1,
                message: "chat is running".into()
            }
        );
    }

    #[test]
    fn clip_and_ids() {
        let long = "错".repeat(1000);
        assert_eq!(clip(&long).chars().count(), MAX_ERROR_TEXT + 1);
        assert_eq!(clip(" ok "), "ok");
        assert_eq!(
            id_of(Some(&serde_json::json!(358861733337088u64))).as_deref(),
            Some("358861733337088")
        );
        assert_eq!(id_of(Some(&serde_json::json!("7"))).as_deref(), Some("7"));
        assert_eq!(id_of(Some(&serde_json::json!(""))), None);
        assert_eq!(id_of(None), None);
    }
}
