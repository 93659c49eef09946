//! `gateway`: the gateway without AWS Lambda. `gateway [serve]` serves every
//! route on one port (`LISTEN_ADDR`, or `0.0.0.0:$PORT`, default
//! `127.0.0.1:8080`), tokens from the `Authorization` header or
//! `TOKENS_FILE`; `gateway login` adds a MiniMax Code account to a tokens
//! file or secret. See docs/self-hosting.md.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Started as the PDF reader of another instance: read, answer, exit.
    hailuo_gateway::serve_pdf_child_if_asked();
    hailuo_gateway::init_tracing();
    hailuo_gateway::login::main_with(std::env::args().skip(1).collect()).await
}
