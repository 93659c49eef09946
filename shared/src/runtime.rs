//! Running a route: on Lambda (buffered or streamed), or as a plain local server.

use axum::Router;

/// JSON logs to stdout (CloudWatch), filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Lambda response streaming (chat).
    Streamed,
    /// A buffered Lambda response.
    Buffered,
}

/// Inside Lambda (`AWS_LAMBDA_RUNTIME_API` is set) run the runtime loop;
/// elsewhere serve the router on `LISTEN_ADDR` (default `127.0.0.1:8080`).
pub async fn run(router: Router, delivery: Delivery) -> Result<(), lambda_http::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return match delivery {
            Delivery::Streamed => lambda_http::run_with_streaming_response(router).await,
            Delivery::Buffered => lambda_http::run(router).await,
        };
    }
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving locally");
    // Small SSE writes must not wait for delayed ACKs (Nagle): no delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await?;
    Ok(())
}
