//! POST /v1/chat/completions, with Lambda response streaming.

use hailuo_gateway::{init_tracing, routes, run, state_from_env, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env("chat-completions").await?;
    run(routes::chat::router(state), Delivery::Streamed).await
}
