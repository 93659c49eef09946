//! POST /v1/messages (Anthropic Messages, streamed) and
//! POST /v1/messages/count_tokens, with Lambda response streaming.

use hailuo_gateway::{
    init_tracing, routes, run, serve_pdf_child_if_asked, state_from_env, Delivery,
};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Started as the PDF reader of another instance: read, answer, exit.
    serve_pdf_child_if_asked();
    init_tracing();
    let state = state_from_env("messages").await?;
    run(routes::messages::router(state), Delivery::Streamed).await
}
