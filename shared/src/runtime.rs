//! Running a route: on Lambda (buffered or streamed), or as a plain local server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
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

/// How many times in a row the runtime loop may stop without serving a
/// single invocation in between before the process gives up (the Runtime API
/// itself is gone, not one response).
const RESTARTS_WITHOUT_PROGRESS: u32 = 5;

/// Inside Lambda (`AWS_LAMBDA_RUNTIME_API` is set) run the runtime loop;
/// elsewhere serve the router on `LISTEN_ADDR` (default `127.0.0.1:8080`).
pub async fn run(router: Router, delivery: Delivery) -> Result<(), lambda_http::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return run_on_lambda(router, delivery).await;
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

/// The runtime loop, restarted when it stops on an error.
///
/// `lambda_runtime` ends its loop on any error while handing a response to the
/// Runtime API, and a response whose caller went away is such an error (the
/// emulator answers 500 and closes the connection; on AWS a broken connection
/// does the same). Ending the process there would cost a cold start and fail
/// the next request routed to this environment, so the loop is started again:
/// the next `/next` call picks up the next invocation. Only when the loop keeps
/// stopping without serving anything in between is the Runtime API itself
/// unusable, and the process exits.
async fn run_on_lambda(router: Router, delivery: Delivery) -> Result<(), lambda_http::Error> {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let router = router.layer(axum::middleware::map_request(move |request: Request| {
        counter.fetch_add(1, Ordering::Relaxed);
        std::future::ready(request)
    }));
    let mut idle_restarts = 0u32;
    loop {
        let before = served.load(Ordering::Relaxed);
        let stopped = match delivery {
            Delivery::Streamed => lambda_http::run_with_streaming_response(router.clone()).await,
            Delivery::Buffered => lambda_http::run(router.clone()).await,
        };
        let Err(error) = stopped else {
            return Ok(());
        };
        if served.load(Ordering::Relaxed) == before {
            idle_restarts += 1;
        } else {
            idle_restarts = 0;
        }
        if idle_restarts >= RESTARTS_WITHOUT_PROGRESS {
            tracing::error!(error = %error, "the Lambda Runtime API keeps failing; exiting");
            return Err(error);
        }
        tracing::warn!(
            error = %error,
            "a response could not be delivered to the Lambda Runtime API; serving the next invocation"
        );
        tokio::time::sleep(Duration::from_millis(20) * 2u32.pow(idle_restarts)).await;
    }
}
