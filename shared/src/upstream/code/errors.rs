//! Failures of the messages route, classified as the protocol's section 6
//! says rather than lumped together: each class has its own consequence for
//! the account (dead, cooling for how long and why, fine) and for the caller
//! (retried elsewhere, a 400, a 413, a 429, a 502). Only the upstream's
//! message is kept, never its raw body.

use std::time::Duration;

use serde::Deserialize;

use super::config::CodeConfig;
use crate::upstream::{Unavailability, UpstreamError};

/// What an error body may hold, in any of the shapes the route uses.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    base_resp: Option<BaseResp>,
    #[serde(default)]
    status_code: Option<i64>,
    #[serde(default)]
    status_msg: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "errorReason")]
    error_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorObject {
    #[serde(default, rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) message: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BaseResp {
    #[serde(default)]
    pub(crate) status_code: i64,
    #[serde(default)]
    pub(crate) status_msg: String,
}

impl ErrorBody {
    pub(crate) fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }

    /// The MiniMax code: `base_resp.status_code`, then a top-level
    /// `status_code`, then the number in parentheses ending the message.
    fn code(&self) -> Option<i64> {
        self.base_resp
            .as_ref()
            .map(|b| b.status_code)
            .filter(|c| *c != 0)
            .or(self.status_code.filter(|c| *c != 0))
            .or_else(|| trailing_code(&self.text()))
    }

    /// The upstream's own words (never the whole body).
    fn text(&self) -> String {
        let candidates = [
            self.error.as_ref().map(|e| e.message.as_str()),
            self.base_resp.as_ref().map(|b| b.status_msg.as_str()),
            self.status_msg.as_deref(),
            self.message.as_deref(),
            self.error_reason.as_deref(),
        ];
        let text = candidates
            .into_iter()
            .flatten()
            .find(|t| !t.trim().is_empty())
            .unwrap_or_default();
        text.chars().take(300).collect()
    }
}

/// `… (2013)` → 2013.
fn trailing_code(message: &str) -> Option<i64> {
    let inner = message.trim_end().strip_suffix(')')?;
    let (_, digits) = inner.rsplit_once('(')?;
    digits.trim().parse().ok()
}

/// The account a failure is about, and the settings that say what it costs.
pub(crate) struct Classifier<'a> {
    pub config: &'a CodeConfig,
    pub fingerprint: &'a str,
}

impl Classifier<'_> {
    fn cooling(&self, class: Unavailability, message: String, for_: Duration) -> UpstreamError {
        UpstreamError::Cooling {
            fingerprint: self.fingerprint.to_string(),
            class,
            message,
            retry_after: for_,
        }
    }

    /// A failing answer: its HTTP status (200 for a `base_resp` failure),
    /// its body, and its `Retry-After` when it had one.
    pub(crate) fn classify(
        &self,
        status: u16,
        body: &str,
        retry_after: Option<Duration>,
    ) -> UpstreamError {
        let parsed = ErrorBody::parse(body);
        let code = parsed.code();
        let text = parsed.text();
        let lower = text.to_ascii_lowercase();
        let message = if text.is_empty() {
            format!("HTTP {status} with no message")
        } else {
            text.clone()
        };
        // Codes first: an inner code wins over the HTTP status.
        match code {
            Some(1_400_010_161 | 1008 | 1002) => {
                return self.cooling(
                    Unavailability::NoCredits,
                    message,
                    self.config.plan_cooldown,
                )
            }
            Some(2056 | 2067) => {
                return self.cooling(
                    Unavailability::PlanWindow,
                    message,
                    retry_after.unwrap_or(self.config.plan_cooldown),
                )
            }
            Some(2045 | 2046 | 2047 | 1039 | 1041) => {
                return self.cooling(
                    Unavailability::Throttled,
                    message,
                    retry_after.unwrap_or(self.config.throttle_cooldown),
                )
            }
            Some(1006) => {
                return self.cooling(Unavailability::Blocked, message, self.config.block_cooldown)
            }
            _ => {}
        }
        if lower.contains("insufficient balance") || lower.contains("credits exhausted") {
            return self.cooling(
                Unavailability::NoCredits,
                message,
                self.config.plan_cooldown,
            );
        }
        if lower.contains("unusual activity") {
            return self.cooling(Unavailability::Blocked, message, self.config.block_cooldown);
        }
        match status {
            401 if body.trim().is_empty() && self.config.is_intl() => self.cooling(
                Unavailability::EgressRefused,
                "an empty 401 from the international host, for a token inside its life: \
                 the network this deployment runs in is refused"
                    .into(),
                self.config.block_cooldown,
            ),
            401 if lower.contains("token is required") => UpstreamError::Protocol(
                "the messages route saw no bearer (an adapter bug, not the account's fault)".into(),
            ),
            401 | 403 => UpstreamError::TokenRejected {
                fingerprint: self.fingerprint.to_string(),
                message,
            },
            402 => self.cooling(
                Unavailability::NoCredits,
                message,
                self.config.plan_cooldown,
            ),
            429 => self.cooling(
                Unavailability::Throttled,
                message,
                retry_after.unwrap_or(self.config.throttle_cooldown),
            ),
            413 => UpstreamError::TooLarge(message),
            400 if lower.contains("context window") || lower.contains("context length") => {
                UpstreamError::InvalidRequest {
                    message,
                    code: "context_length_exceeded",
                }
            }
            400 => UpstreamError::InvalidRequest {
                message,
                code: "invalid_value",
            },
            503 if lower.contains("direct_route_not_configured") => UpstreamError::Rejected {
                status,
                message: "the messages URL is wrong (direct_route_not_configured): check \
                          MINIMAX_CODE_BASE_URL and MINIMAX_CODE_LLM_PATH"
                    .into(),
            },
            200 => UpstreamError::Api {
                code: code.unwrap_or(-1),
                message,
            },
            // 529 (overloaded) and other 5xx: the account is fine; retried
            // elsewhere with back-off, then a 502.
            _ => UpstreamError::Http { status, message },
        }
    }

    /// A mid-stream `error` event, classified as the status its type stands for.
    pub(crate) fn classify_event(&self, error: &ErrorObject, raw: &str) -> UpstreamError {
        let status = match error.kind.as_str() {
            "authentication_error" => 401,
            "permission_error" => 403,
            "billing_error" => 402,
            "rate_limit_error" => 429,
            "overloaded_error" => 529,
            "invalid_request_error" => 400,
            "request_too_large" => 413,
            _ => 500,
        };
        self.classify(status, raw, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Lookup;

    fn config(cn: bool) -> CodeConfig {
        let get = move |k: &str| (cn && k == "MINIMAX_CODE_REGION").then(|| "cn".to_string());
        CodeConfig::from_lookup(&Lookup::new(&get))
    }

    fn classify(status: u16, body: &str) -> UpstreamError {
        let config = config(false);
        Classifier {
            config: &config,
            fingerprint: "fp000001",
        }
        .classify(status, body, None)
    }

    fn class(e: &UpstreamError) -> Option<(Unavailability, u64)> {
        match e {
            UpstreamError::Cooling {
                class, retry_after, ..
            } => Some((*class, retry_after.as_secs())),
            _ => None,
        }
    }

    #[test]
    fn every_row_of_section_six() {
        use Unavailability::*;
        let auth = |m: &str| {
            format!(
                r#"{{"type":"error","error":{{"type":"authentication_error","message":"{m}"}}}}"#
            )
        };
        assert!(matches!(
            classify(401, &auth("token expired")),
            UpstreamError::TokenRejected { .. }
        ));
        assert!(matches!(
            classify(401, r#"{"code":401,"message":"token is required"}"#),
            UpstreamError::Protocol(_)
        ));
        assert_eq!(class(&classify(401, "")), Some((EgressRefused, 3600)));
        let forbidden = r#"{"type":"error","error":{"type":"permission_error","message":"request has been blocked due to unusual activity (1006)"}}"#;
        assert_eq!(class(&classify(403, forbidden)), Some((Blocked, 3600)));
        let credits =
            r#"{"type":"error","error":{"type":"billing_error","message":"credits exhausted"}}"#;
        assert_eq!(class(&classify(402, credits)), Some((NoCredits, 3600)));
        assert_eq!(
            class(&classify(
                500,
                r#"{"status_code":1400010161,"status_msg":"credits exhausted"}"#
            )),
            Some((NoCredits, 3600))
        );
        let plan = r#"{"type":"error","error":{"type":"rate_limit_error","message":"usage limit exceeded (2056)"}}"#;
        assert_eq!(class(&classify(429, plan)), Some((PlanWindow, 3600)));
        let throttle = r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limit exceeded (2045)"}}"#;
        assert_eq!(class(&classify(429, throttle)), Some((Throttled, 60)));
        assert_eq!(
            class(&classify(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limit exceeded"}}"#
            )),
            Some((Throttled, 60))
        );
        assert!(matches!(
            classify(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"cluster overload"}}"#
            ),
            UpstreamError::Http { status: 529, .. }
        ));
        assert!(matches!(
            classify(
                503,
                r#"{"errorCode":50115,"errorReason":"direct_route_not_configured"}"#
            ),
            UpstreamError::Rejected { .. }
        ));
        let overflow = r#"{"type":"error","error":{"type":"invalid_request_error","message":"invalid params, context window exceeds limit (2013)"}}"#;
        assert!(matches!(
            classify(400, overflow),
            UpstreamError::InvalidRequest {
                code: "context_length_exceeded",
                ..
            }
        ));
        assert!(matches!(
            classify(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad (2013)"}}"#
            ),
            UpstreamError::InvalidRequest {
                code: "invalid_value",
                ..
            }
        ));
        assert!(matches!(
            classify(
                413,
                r#"{"type":"error","error":{"type":"request_too_large","message":"request too large"}}"#
            ),
            UpstreamError::TooLarge(_)
        ));
        assert_eq!(
            class(&classify(
                200,
                r#"{"base_resp":{"status_code":1006,"status_msg":"request has been blocked due to unusual activity"}}"#
            )),
            Some((Blocked, 3600))
        );
        assert!(matches!(
            classify(
                200,
                r#"{"base_resp":{"status_code":777,"status_msg":"odd"}}"#
            ),
            UpstreamError::Api { code: 777, .. }
        ));
        assert!(matches!(
            classify(
                500,
                r#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#
            ),
            UpstreamError::Http { status: 500, .. }
        ));
    }

    #[test]
    fn retry_after_is_honoured_and_an_empty_401_on_cn_is_the_token() {
        let config = config(false);
        let c = Classifier {
            config: &config,
            fingerprint: "fp",
        };
        let e = c.classify(429, "{}", Some(Duration::from_secs(7)));
        assert_eq!(class(&e), Some((Unavailability::Throttled, 7)));
        let cn = self::config(true);
        let c = Classifier {
            config: &cn,
            fingerprint: "fp",
        };
        assert!(matches!(
            c.classify(401, "", None),
            UpstreamError::TokenRejected { .. }
        ));
    }

    #[test]
    fn the_raw_body_is_never_the_message() {
        let e = classify(502, "<html>gateway said something long and odd</html>");
        assert_eq!(e.to_string(), "upstream HTTP 502: HTTP 502 with no message");
    }
}
