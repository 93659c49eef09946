//! POST /token/check, and the operator's view: GET /admin/pool, GET /admin.

use hailuo_gateway::{init_tracing, routes, run, state_from_env, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env("token-check").await?;
    run(routes::token_check::router(state), Delivery::Buffered).await
}
