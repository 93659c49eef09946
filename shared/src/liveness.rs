//! The scheduled liveness check: every token in the tokens secret is checked
//! upstream (concurrently, bounded) and the verdicts go to the status document,
//! named by fingerprint only. The tokens secret is only ever read.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;

use crate::config::Config;
use crate::credentials::document::{Document, Latest};
use crate::credentials::secret::{StatusDocument, TokenStatus, TokensDocument};
use crate::credentials::secrets_manager::SecretsManager;
use crate::redact::fingerprint;
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug)]
pub struct Report {
    pub document: StatusDocument,
}

#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("{0} is not set")]
    NotConfigured(&'static str),
    #[error("the tokens secret could not be read: {0}")]
    TokensUnreadable(String),
    #[error("the tokens secret is not the expected JSON")]
    TokensMalformed,
    #[error("the status document could not be written: {0}")]
    StatusUnwritable(String),
}

fn now_rfc3339() -> String {
    use aws_smithy_types::date_time::{DateTime, Format};
    DateTime::from(std::time::SystemTime::now())
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// Check every token and write the status document.
pub async fn check_all(
    config: &Config,
    upstream: Arc<dyn Upstream>,
    secrets: &SecretsManager,
) -> Result<Report, LivenessError> {
    let tokens_id = config
        .tokens_secret_id
        .as_deref()
        .ok_or(LivenessError::NotConfigured("TOKENS_SECRET_ID"))?;
    let status_id = config
        .token_status_secret_id
        .as_deref()
        .ok_or(LivenessError::NotConfigured("TOKEN_STATUS_SECRET_ID"))?;
    let text = secrets
        .get_secret_value(tokens_id)
        .await
        .map_err(|e| LivenessError::TokensUnreadable(e.to_string()))?
        .secret_string
        .unwrap_or_default();
    let tokens = serde_json::from_str::<TokensDocument>(&text)
        .map_err(|_| LivenessError::TokensMalformed)?
        .tokens;
    // Verdicts of the last run, kept for tokens whose check fails this time.
    let previous: HashMap<String, TokenStatus> = match secrets.get_secret_value(status_id).await {
        Ok(out) => serde_json::from_str::<StatusDocument>(&out.secret_string.unwrap_or_default())
            .map(|d| d.tokens)
            .unwrap_or_default(),
        Err(_) => HashMap::new(),
    };

    let document = check_tokens(config, upstream, tokens, &previous).await;
    let body = serde_json::to_string(&document).unwrap_or_default();
    match secrets.put_secret_value(status_id, &body).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {
            secrets
                .create_secret(
                    status_id,
                    "Token liveness verdicts by fingerprint, written by token-liveness",
                    &body,
                )
                .await
                .map_err(|e| LivenessError::StatusUnwritable(e.to_string()))?;
        }
        Err(e) => return Err(LivenessError::StatusUnwritable(e.to_string())),
    }
    Ok(Report { document })
}

/// Check `tokens` upstream (at most `LIVENESS_CONCURRENCY` at once): the
/// status document of this run. A check that fails proves nothing, so a
/// token's verdict in `previous` is kept then (or it is taken as alive).
pub(crate) async fn check_tokens(
    config: &Config,
    upstream: Arc<dyn Upstream>,
    tokens: Vec<String>,
    previous: &HashMap<String, TokenStatus>,
) -> StatusDocument {
    let checked: Vec<(String, TokenStatus)> = futures_util::stream::iter(tokens)
        .map(|token| {
            let upstream = upstream.clone();
            async move {
                let fp = fingerprint(&token);
                let result = upstream.is_live(&token).await;
                let checked_at = now_rfc3339();
                let status = match result {
                    Ok(true) => TokenStatus { live: true, checked_at, reason: "alive".into() },
                    Ok(false) => TokenStatus { live: false, checked_at, reason: "rejected upstream (expired or logged out)".into() },
                    Err(e) => {
                        // A failed check proves nothing: keep the last verdict (or assume alive).
                        let live = previous.get(&fp).is_none_or(|p| p.live);
                        TokenStatus { live, checked_at, reason: format!("check failed ({}); kept the last verdict", short(&e)) }
                    }
                };
                tracing::info!(token = %fp, live = status.live, reason = %status.reason, "token checked");
                (fp, status)
            }
        })
        .buffer_unordered(config.liveness_concurrency)
        .collect()
        .await;

    let live = checked.iter().filter(|(_, s)| s.live).count();
    StatusDocument {
        dead: checked.len() - live,
        live,
        checked_at: now_rfc3339(),
        tokens: checked.into_iter().collect(),
    }
}

/// The self-hosted server's check: the tokens of `TOKENS_FILE`, the verdicts
/// kept in memory for the credentials to read.
pub async fn check_local(
    config: &Config,
    upstream: Arc<dyn Upstream>,
    tokens: &Document<TokensDocument>,
    status: &Latest<StatusDocument>,
) -> Result<Report, LivenessError> {
    let tokens = tokens
        .get()
        .await
        .map_err(|e| LivenessError::TokensUnreadable(e.to_string()))?
        .tokens
        .clone();
    let previous = status.get().map(|d| d.tokens.clone()).unwrap_or_default();
    let document = check_tokens(config, upstream, tokens, &previous).await;
    status.set(document.clone());
    Ok(Report { document })
}

fn short(e: &UpstreamError) -> String {
    crate::text::clip(&e.to_string(), 120)
}

/// One CloudWatch Embedded Metric Format line with `LiveTokens` and `DeadTokens`.
pub fn emf_line(report: &Report, service: &str, timestamp_ms: u128) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": "HailuoGateway",
                "Dimensions": [["Service"]],
                "Metrics": [{"Name": "LiveTokens", "Unit": "Count"}, {"Name": "DeadTokens", "Unit": "Count"}],
            }],
        },
        "Service": service,
        "LiveTokens": report.document.live,
        "DeadTokens": report.document.dead,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_names_both_metrics() {
        let report = Report {
            document: StatusDocument {
                live: 2,
                dead: 1,
                ..Default::default()
            },
        };
        let line: serde_json::Value =
            serde_json::from_str(&emf_line(&report, "token-liveness", 1_700_000_000_000)).unwrap();
        assert_eq!(line["LiveTokens"], 2);
        assert_eq!(line["DeadTokens"], 1);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Name"],
            "DeadTokens"
        );
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000u64);
    }
}
