//! POST /v1/responses (OpenAI Responses, stateless, streamed), with Lambda
//! response streaming.

use hailuo_gateway::{init_tracing, routes, run, state_from_env, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env("responses").await?;
    run(routes::responses::router(state), Delivery::Streamed).await
}
