//! GET /v1/models.

use hailuo_gateway::{init_tracing, routes, run, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    run(routes::models::router(), Delivery::Buffered).await
}
