//! GET /v1/models.

use hailuo_gateway::{init_tracing, routes, run, state_from_env, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env("models").await?;
    run(routes::models::router(state), Delivery::Buffered).await
}
