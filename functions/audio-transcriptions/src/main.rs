//! POST /v1/audio/transcriptions (multipart), buffered: the answer is one
//! JSON document or text.

use hailuo_gateway::{init_tracing, routes, run, voice_state_from_env, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = voice_state_from_env("audio-transcriptions").await?;
    run(routes::transcription::router(state), Delivery::Buffered).await
}
