//! Hailuo AI behind an OpenAI-compatible API: the library every Lambda
//! function in this workspace is wired from.
//!
//! A request flows one way: route (validate) → credentials → prompt →
//! upstream adapter → OpenAI encoder → response, with the upstream
//! conversation deleted before the response ends.

mod answer;
mod config;
mod credentials;
mod error;
mod liveness;
mod openai;
mod prompt;
mod redact;
pub mod routes;
mod runtime;
pub mod settings;
#[cfg(test)]
mod testing;
mod text;
pub mod upstream;

use std::sync::Arc;

pub use config::Config;
pub use credentials::secret::aws_config;
pub use liveness::{check_all, emf_line};
pub use routes::AppState;
pub use runtime::{init_tracing, run, Delivery};

/// The upstream this deployment talks to (`UPSTREAM`).
pub fn upstream_from_config(
    config: &Arc<Config>,
) -> Result<Arc<dyn upstream::Upstream>, lambda_http::Error> {
    Ok(match config.upstream.as_str() {
        "hailuo" => Arc::new(upstream::hailuo::HailuoClient::new(config.hailuo.clone())?),
        "minimax-agent" | "agent" => {
            Arc::new(upstream::agent::AgentClient::new(config.agent.clone())?)
        }
        other => {
            return Err(
                format!("UPSTREAM must be `hailuo` or `minimax-agent`, not {other:?}").into(),
            )
        }
    })
}

/// State built from the environment, once per execution environment.
/// `function` names the function in the AWS SDK's user agent.
pub async fn state_from_env(function: &str) -> Result<AppState, lambda_http::Error> {
    let config = Arc::new(Config::from_env());
    let upstream = upstream_from_config(&config)?;
    let credentials = Arc::new(credentials::Credentials::from_env(&config, function).await?);
    Ok(AppState {
        config,
        upstream,
        credentials,
    })
}
