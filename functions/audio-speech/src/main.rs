//! POST /v1/audio/speech, with Lambda response streaming (the audio is sent
//! as its parts arrive).

use hailuo_gateway::{init_tracing, routes, run, voice_state_from_env, Delivery};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = voice_state_from_env("audio-speech").await?;
    run(routes::speech::router(state), Delivery::Streamed).await
}
