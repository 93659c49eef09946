//! The scheduled maintenance: MiniMax Code accounts whose access token is
//! due are renewed first (`credentials/renewal.rs`: the one writer, each
//! rotation stored before the next), then every token in the tokens secret
//! is checked upstream (concurrently, bounded) and the verdicts go to the
//! status document, named by fingerprint only, beside the lineages. The
//! tokens secret is only ever read.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;

use crate::config::Config;
use crate::credentials::document::{Document, Latest};
use crate::credentials::renewal::{self, Lineage, LineageStore, Renewed};
use crate::credentials::secret::{StatusDocument, TokenStatus, TokensDocument};
use crate::credentials::secrets_manager::SecretsManager;
use crate::redact::fingerprint;
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug)]
pub struct Report {
    pub document: StatusDocument,
    /// What the renewal of MiniMax Code accounts did.
    pub renewed: Renewed,
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

/// The status secret as the lineages' store: each save writes the whole
/// document (the last verdicts and every lineage), creating it the first time.
struct SecretStore<'a> {
    secrets: &'a SecretsManager,
    id: &'a str,
    verdicts: HashMap<String, TokenStatus>,
}

#[async_trait::async_trait]
impl LineageStore for SecretStore<'_> {
    async fn load(&self) -> Result<HashMap<String, Lineage>, String> {
        Ok(read_status(self.secrets, self.id).await?.accounts)
    }

    async fn save(&self, lineages: &HashMap<String, Lineage>) -> Result<(), String> {
        let document = StatusDocument {
            tokens: self.verdicts.clone(),
            accounts: lineages.clone(),
            ..StatusDocument::default()
        };
        write_status(self.secrets, self.id, &document)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The status document as stored now; an absent one is empty.
async fn read_status(secrets: &SecretsManager, id: &str) -> Result<StatusDocument, String> {
    match secrets.get_secret_value(id).await {
        Ok(out) => Ok(serde_json::from_str::<StatusDocument>(
            &out.secret_string.unwrap_or_default(),
        )
        .unwrap_or_default()),
        Err(e) if e.is_not_found() => Ok(StatusDocument::default()),
        Err(e) => Err(e.to_string()),
    }
}

async fn write_status(
    secrets: &SecretsManager,
    id: &str,
    document: &StatusDocument,
) -> Result<(), LivenessError> {
    let body = serde_json::to_string(document).unwrap_or_default();
    match secrets.put_secret_value(id, &body).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => secrets
            .create_secret(
                id,
                "Token liveness verdicts by fingerprint and MiniMax Code token lineages, written by token-liveness",
                &body,
            )
            .await
            .map_err(|e| LivenessError::StatusUnwritable(e.to_string())),
        Err(e) => Err(LivenessError::StatusUnwritable(e.to_string())),
    }
}

/// The account service of MiniMax Code, when there are accounts to renew.
fn account_service(
    config: &Config,
    document: &TokensDocument,
) -> Option<crate::upstream::code::oauth::AccountService> {
    if document.code_accounts.is_empty() {
        return None;
    }
    match crate::upstream::code::oauth::AccountService::new(
        &config.code,
        std::time::Duration::from_secs(30),
    ) {
        Ok(service) => Some(service),
        Err(e) => {
            tracing::error!(error = %e, "MiniMax Code accounts cannot be renewed");
            None
        }
    }
}

/// Renew what is due, then check every token, and write the status document.
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
    let document = serde_json::from_str::<TokensDocument>(&text)
        .map_err(|_| LivenessError::TokensMalformed)?;
    // The last run's verdicts (kept for tokens whose check fails this time)
    // and lineages. Unreadable, nothing may be renewed: a lineage not read
    // is a refresh token that may already be spent.
    let previous = read_status(secrets, status_id)
        .await
        .map_err(LivenessError::StatusUnwritable)?;
    let mut lineages = previous.accounts.clone();
    let mut renewed = Renewed::default();
    // With the shared table, maintainers running at once take turns.
    let locks = match &config.accounts_table {
        Some(table) => {
            let table = crate::pool::table::AccountsTable::new(
                &crate::aws::Setup::Env,
                table,
                "token-liveness",
            )
            .await;
            Some(Arc::new(crate::pool::SharedPool::new(
                Arc::new(table),
                config.lease_ttl,
            )))
        }
        None => None,
    };
    let store = SecretStore {
        secrets,
        id: status_id,
        verdicts: previous.tokens.clone(),
    };
    if let Some(service) = account_service(config, &document) {
        renewed = renewal::renew_due(
            &document.code_accounts,
            &mut lineages,
            renewal::unix_now(),
            &service,
            &store,
            locks.as_ref(),
        )
        .await;
    }
    let mut status = check_document(config, upstream, &document, &previous.tokens).await;
    status.accounts = lineages;
    count_refreshes(&renewed);
    // Another maintainer's rotations since this one read are kept.
    let held = renewal::merge_stored(&store, &mut status.accounts, locks.as_ref())
        .await
        .map_err(LivenessError::StatusUnwritable)?;
    let written = write_status(secrets, status_id, &status).await;
    if let Some(held) = held {
        held.release().await;
    }
    written?;
    Ok(Report {
        document: status,
        renewed,
    })
}

/// The tokens of the document checked on the deployment's upstream, and
/// its platform keys (and `MINIMAX_API_KEY`'s) on the platform, with the
/// key checks of its official client (`ApiClient::is_live`): one status.
async fn check_document(
    config: &Config,
    upstream: Arc<dyn Upstream>,
    document: &TokensDocument,
    previous: &HashMap<String, TokenStatus>,
) -> StatusDocument {
    let mut status = check_tokens(config, upstream, document.tokens.clone(), previous).await;
    let mut keys = document.minimax_api_keys.clone();
    for key in &config.minimax_api_keys {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    if keys.is_empty() {
        return status;
    }
    match crate::upstream::api::ApiClient::new(config.api.clone()) {
        Ok(platform) => {
            let checked = check_tokens(config, Arc::new(platform), keys, previous).await;
            status.live += checked.live;
            status.dead += checked.dead;
            status.tokens.extend(checked.tokens);
        }
        Err(e) => tracing::error!(error = %e, "the platform's keys cannot be checked"),
    }
    status
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
        accounts: HashMap::new(),
    }
}

/// The self-hosted server's lineages: a state file beside `TOKENS_FILE`
/// that only this process writes (mode 600, replaced atomically), and the
/// in-memory status the credentials read, updated on every save.
pub struct StateFile {
    pub path: std::path::PathBuf,
    pub status: Arc<Latest<StatusDocument>>,
}

impl StateFile {
    /// The lineages the file holds (none when it does not exist yet).
    pub async fn read(&self) -> Result<HashMap<String, Lineage>, String> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice::<StatusDocument>(&bytes)
                .map(|d| d.accounts)
                .map_err(|e| format!("{} is not the expected JSON: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(format!("{} cannot be read: {e}", self.path.display())),
        }
    }
}

#[async_trait::async_trait]
impl LineageStore for StateFile {
    async fn load(&self) -> Result<HashMap<String, Lineage>, String> {
        self.read().await
    }

    async fn save(&self, lineages: &HashMap<String, Lineage>) -> Result<(), String> {
        let mut document = self.status.get().map(|d| (*d).clone()).unwrap_or_default();
        document.accounts = lineages.clone();
        let body = serde_json::to_vec_pretty(&document).map_err(|e| e.to_string())?;
        crate::credentials::document::write_private(&self.path, &body)
            .await
            .map_err(|e| format!("{} cannot be written: {e}", self.path.display()))?;
        self.status.set(document);
        Ok(())
    }
}

/// The self-hosted server's maintenance: renew what is due (stored in the
/// state file), and, when `check` says, check the tokens of `TOKENS_FILE`;
/// the verdicts and lineages are kept in memory for the credentials to read.
pub async fn check_local(
    config: &Config,
    upstream: Arc<dyn Upstream>,
    tokens: &Document<TokensDocument>,
    state: &StateFile,
    check: bool,
) -> Result<Report, LivenessError> {
    let document = tokens
        .get()
        .await
        .map_err(|e| LivenessError::TokensUnreadable(e.to_string()))?;
    let previous = state.status.get().map(|d| (*d).clone()).unwrap_or_default();
    let mut lineages = previous.accounts.clone();
    let mut renewed = Renewed::default();
    if let Some(service) = account_service(config, &document) {
        renewed = renewal::renew_due(
            &document.code_accounts,
            &mut lineages,
            renewal::unix_now(),
            &service,
            state,
            // One process writes the state file (replicas: see self-hosting.md).
            None,
        )
        .await;
    }
    let mut status = if check {
        check_document(config, upstream, &document, &previous.tokens).await
    } else {
        previous
    };
    status.accounts = lineages;
    count_refreshes(&renewed);
    state.status.set(status.clone());
    Ok(Report {
        document: status,
        renewed,
    })
}

fn short(e: &UpstreamError) -> String {
    crate::text::clip(&e.to_string(), 120)
}

/// One CloudWatch Embedded Metric Format line with `LiveTokens` and `DeadTokens`.
pub fn emf_line(report: &Report, service: &str, timestamp_ms: u128) -> String {
    let r = &report.renewed;
    json!({
        "_aws": {
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": "HailuoGateway",
                "Dimensions": [["Service"]],
                "Metrics": [
                    {"Name": "LiveTokens", "Unit": "Count"},
                    {"Name": "DeadTokens", "Unit": "Count"},
                    {"Name": "Refreshed", "Unit": "Count"},
                    {"Name": "RefreshFailures", "Unit": "Count"},
                ],
            }],
        },
        "Service": service,
        "LiveTokens": report.document.live,
        "DeadTokens": report.document.dead,
        "Refreshed": r.renewed.len(),
        // A refresh that died, failed without a verdict, or whose successor
        // could not be stored: each needs an operator before the hour is up.
        "RefreshFailures": r.dead.len() + r.failed.len() + r.unsaved.len(),
    })
    .to_string()
}

/// One run's refreshes into the process's figures (the server's /metrics).
fn count_refreshes(r: &Renewed) {
    crate::metrics::refreshes(&[
        ("renewed", r.renewed.len()),
        ("dead", r.dead.len()),
        ("failed", r.failed.len()),
        ("unsaved", r.unsaved.len()),
    ]);
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
            renewed: Renewed::default(),
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
