//! Scheduled (EventBridge): checks every token in the tokens secret and writes
//! the status document. Outside Lambda it runs the check once.

use std::sync::Arc;

use hailuo_gateway::{
    check_all, emf_line, init_tracing, upstream_from_config, Config, SecretsManager,
};
use lambda_http::lambda_runtime::{self, service_fn, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let config = Arc::new(Config::from_env());
    let upstream = upstream_from_config(&config)?;
    let secrets = SecretsManager::from_env("token-liveness");
    let check = |_event: Value| {
        let (config, upstream, secrets) = (config.clone(), upstream.clone(), secrets.clone());
        async move {
            let report = check_all(&config, upstream, &secrets).await.map_err(|e| {
                tracing::error!(error = %e, "liveness check failed");
                e
            })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            // The metric line goes to stdout on its own, as EMF requires.
            println!("{}", emf_line(&report, "token-liveness", now.as_millis()));
            let d = &report.document;
            Ok::<Value, lambda_runtime::Error>(
                json!({"live": d.live, "dead": d.dead, "checked_at": d.checked_at}),
            )
        }
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        println!("{}", check(Value::Null).await?);
        return Ok(());
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| check(event.payload))).await
}
