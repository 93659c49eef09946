//! The platform's failures (protocol section 3), read the same way on every
//! endpoint: the code is the bracketed number ending `error.message`, else
//! `base_resp.status_code`; without either, the HTTP status decides. Codes
//! are classified first and statuses second, never by `error.type`. The
//! caller gets the upstream's words without the bracketed code, never its
//! body, and a key is only ever named by its fingerprint.

use serde::Deserialize;

use super::config::ApiConfig;
use crate::upstream::{Unavailability, UpstreamError};

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    base_resp: Option<BaseResp>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorObject {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BaseResp {
    #[serde(default)]
    pub status_code: i64,
    #[serde(default)]
    pub status_msg: String,
}

/// `… (2013)` → (2013, "…").
fn trailing_code(message: &str) -> Option<(i64, &str)> {
    let inner = message.trim_end().strip_suffix(')')?;
    let (text, digits) = inner.rsplit_once('(')?;
    let digits = digits.trim();
    if !(4..=5).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, text.trim_end()))
}

/// At most 200 characters of an upstream text, on one line.
fn quoted(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A caller-facing code for the caller's own mistakes (`minimax_<code>`).
fn caller_code(code: i64) -> &'static str {
    match code {
        1026 | 1027 => "content_filter",
        1042 => "minimax_1042",
        2013 => "minimax_2013",
        2054 => "minimax_2054",
        20132 => "minimax_20132",
        2042 => "minimax_2042",
        2061 => "minimax_2061",
        _ => "invalid_request_error",
    }
}

/// The key a failure is about, and the settings that say what it costs.
pub(crate) struct Classifier<'a> {
    pub config: &'a ApiConfig,
    pub fingerprint: &'a str,
}

impl Classifier<'_> {
    fn cooling(&self, class: Unavailability, message: String) -> UpstreamError {
        let retry_after = match class {
            Unavailability::Throttled => self.config.cooldown,
            _ => self.config.exhausted,
        };
        UpstreamError::Cooling {
            fingerprint: self.fingerprint.to_string(),
            class,
            message,
            retry_after,
        }
    }

    /// A failure: the HTTP status (200 for a `base_resp` failure) and body.
    pub(crate) fn classify(&self, status: u16, body: &str) -> UpstreamError {
        let Ok(parsed) = serde_json::from_str::<ErrorBody>(body) else {
            let excerpt = quoted(body);
            return self.by_status(
                status,
                if excerpt.is_empty() {
                    format!("HTTP {status} with an empty body")
                } else {
                    format!("HTTP {status} that is not JSON: {excerpt}")
                },
            );
        };
        let from_error = parsed.error.as_ref().map(|e| e.message.as_str());
        let (code, text) = match from_error.and_then(trailing_code) {
            Some((code, text)) => (Some(code), text.to_string()),
            None => {
                let base = parsed.base_resp.as_ref().filter(|b| b.status_code != 0);
                let text = from_error
                    .filter(|t| !t.trim().is_empty())
                    .or(base.map(|b| b.status_msg.as_str()))
                    .unwrap_or_default()
                    .to_string();
                (base.map(|b| b.status_code), text)
            }
        };
        let text = quoted(&text);
        match code {
            Some(code) => self.by_code(status, code, text),
            None => self.by_status(
                status,
                if text.is_empty() {
                    format!("HTTP {status} with no message")
                } else {
                    text
                },
            ),
        }
    }

    /// Section 3.3, code by code.
    pub(crate) fn by_code(&self, status: u16, code: i64, text: String) -> UpstreamError {
        let message = format!("{text} ({code})");
        let fingerprint = self.fingerprint.to_string();
        match code {
            1000 | 1013 | 1024 | 1033 => UpstreamError::Api { code, message },
            1001 => UpstreamError::Timeout(format!("the platform timed out: {message}")),
            1002 | 1039 | 1041 | 2045 => self.cooling(Unavailability::Throttled, message),
            1004 => UpstreamError::TokenRejected {
                fingerprint,
                message: format!("the platform refused the key: {message}"),
            },
            2049 => UpstreamError::TokenRejected {
                fingerprint,
                message: format!(
                    "the key is not valid on the {} region's host ({}): {message}. A key works \
                     only in the region it was issued in: set MINIMAX_API_REGION=cn for a key \
                     from platform.minimaxi.com, intl for platform.minimax.io",
                    self.config.region.as_str(),
                    self.config.host()
                ),
            },
            1008 | 1028 | 1030 => self.cooling(Unavailability::NoCredits, message),
            2056 => self.cooling(Unavailability::PlanWindow, message),
            1026 => UpstreamError::InvalidRequest {
                message: format!("the platform flagged the input as sensitive: {message}"),
                code: caller_code(code),
            },
            1027 => UpstreamError::InvalidRequest {
                message: format!("the platform flagged the output as sensitive: {message}"),
                code: caller_code(code),
            },
            1042 => UpstreamError::InvalidRequest {
                message: format!(
                    "the input is more than 10 % invisible characters: {message}; remove them"
                ),
                code: caller_code(code),
            },
            2013 | 2054 | 20132 | 2042 | 2061 | 1043 | 1044 | 2037 | 2038 | 2039 | 2048 => {
                UpstreamError::InvalidRequest {
                    message,
                    code: caller_code(code),
                }
            }
            _ => UpstreamError::Rejected {
                status: if status == 200 { 502 } else { status },
                message: format!("unknown platform error {code}: {text}"),
            },
        }
    }

    fn by_status(&self, status: u16, message: String) -> UpstreamError {
        match status {
            401 | 403 => UpstreamError::TokenRejected {
                fingerprint: self.fingerprint.to_string(),
                message,
            },
            413 => UpstreamError::TooLarge(message),
            429 => self.cooling(Unavailability::Throttled, message),
            200 => UpstreamError::Protocol(message),
            _ => UpstreamError::from_status(status, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::api::config::tests::config;

    fn classify(status: u16, body: &str) -> UpstreamError {
        let c = config(&[]);
        Classifier {
            config: &c,
            fingerprint: "fp",
        }
        .classify(status, body)
    }

    #[test]
    fn both_styles_are_read_by_code_first() {
        // Style B1/B2: the bracketed code.
        let e = classify(
            400,
            r#"{"type":"error","error":{"type":"bad_request_error","message":"invalid params, tool result's tool id(call_1) not found (2013)"}}"#,
        );
        assert_eq!(
            e,
            UpstreamError::InvalidRequest {
                message: "invalid params, tool result's tool id(call_1) not found (2013)".into(),
                code: "minimax_2013"
            }
        );
        // Style A: HTTP 200 with base_resp.
        let e = classify(
            200,
            r#"{"data":null,"base_resp":{"status_code":1008,"status_msg":"insufficient balance"}}"#,
        );
        assert!(
            matches!(
                e,
                UpstreamError::Cooling {
                    class: Unavailability::NoCredits,
                    ..
                }
            ),
            "{e:?}"
        );
        // The code wins over the status: a 500 with 1002 is a rate limit.
        let e = classify(
            500,
            r#"{"error":{"message":"rate limit exceeded(RPM) (1002)"}}"#,
        );
        assert!(
            matches!(e, UpstreamError::Cooling { class: Unavailability::Throttled, retry_after, .. } if retry_after.as_secs() == 30)
        );
        let e = classify(429, r#"{"error":{"message":"usage limit (2056)"}}"#);
        assert!(matches!(
            e,
            UpstreamError::Cooling {
                class: Unavailability::PlanWindow,
                ..
            }
        ));
        for code in [1028, 1030] {
            let e = classify(
                500,
                &format!(r#"{{"error":{{"message":"quota ({code})"}}}}"#),
            );
            assert!(matches!(
                e,
                UpstreamError::Cooling {
                    class: Unavailability::NoCredits,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_foreign_key_is_named_as_such_and_dead_keys_are_rejected() {
        let e = classify(401, r#"{"error":{"message":"invalid api key (2049)"}}"#);
        let UpstreamError::TokenRejected { message, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(
            message.contains("MINIMAX_API_REGION") && message.contains("api.minimax.io"),
            "{message}"
        );
        let e = classify(
            401,
            r#"{"base_resp":{"status_code":1004,"status_msg":"login fail"}}"#,
        );
        assert!(matches!(e, UpstreamError::TokenRejected { .. }));
        // No code: the status.
        assert!(matches!(
            classify(403, "{}"),
            UpstreamError::TokenRejected { .. }
        ));
    }

    #[test]
    fn the_rest_of_the_table() {
        assert!(matches!(
            classify(500, r#"{"error":{"message":"internal error (1000)"}}"#),
            UpstreamError::Api { code: 1000, .. }
        ));
        assert!(classify(500, r#"{"error":{"message":"internal error (1000)"}}"#).is_retryable());
        assert!(matches!(
            classify(500, r#"{"error":{"message":"timeout (1001)"}}"#),
            UpstreamError::Timeout(_)
        ));
        let e = classify(400, r#"{"error":{"message":"input new_sensitive (1026)"}}"#);
        assert!(matches!(
            e,
            UpstreamError::InvalidRequest {
                code: "content_filter",
                ..
            }
        ));
        let e = classify(500, r#"{"error":{"message":"what (9999)"}}"#);
        assert!(matches!(e, UpstreamError::Rejected { status: 500, .. }) && !e.is_retryable());
        // A proxy's HTML page: quoted, short, on one line.
        let e = classify(502, &format!("<html>\n{}</html>", "x".repeat(1000)));
        let UpstreamError::Http {
            status: 502,
            message,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert!(message.len() < 260 && !message.contains('\n'), "{message}");
        assert!(matches!(classify(413, ""), UpstreamError::TooLarge(_)));
        // A number in parentheses that is not a code stays in the text.
        let e = classify(400, r#"{"error":{"message":"bad (x)"}}"#);
        assert!(matches!(e, UpstreamError::Rejected { status: 400, .. }));
    }
}
