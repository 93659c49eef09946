//! The gateway without AWS Lambda: every route on one port (`LISTEN_ADDR`,
//! or `0.0.0.0:$PORT`, default `127.0.0.1:8080`), tokens from the
//! `Authorization` header or `TOKENS_FILE`. See the README's self-hosting section.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    hailuo_gateway::init_tracing();
    hailuo_gateway::run_server().await
}
