//! `POST /v1/audio/speech`: the text read aloud: by MiniMax's paid
//! platform (T2A v2) when the request has a platform key, else by a Hailuo
//! voice (`UPSTREAM=hailuo`).
//!
//! On the platform, mp3 and pcm stream as its events arrive (its final
//! aggregate never sent again) and wav, flac and opus come whole; the
//! first bytes are in before the response starts, so every failure up to
//! them is an OpenAI error with its status.
//!
//! On Hailuo:
//! The first part is downloaded (and converted) before the response starts,
//! so that every failure up to there is an OpenAI error with its status;
//! the other parts stream as they arrive, from a task that owns the
//! synthesis and deletes its conversation before the body ends (Lambda
//! freezes the environment once it has). A part that fails later cuts the
//! body short with an error, never passing a partial answer off as whole.
//! `wav` is the exception: its header carries the length, so it is sent
//! whole once every part is in.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use super::AppState;
use crate::answer::Pool;
use crate::audio::{self, AudioError};
use crate::error::ApiError;
use crate::openai::audio::{SpeechFormat, SpeechRequest, MAX_INPUT_CHARS};
use crate::speech::{resolve_voice, Synthesis};
use crate::upstream::api::speech::T2aRequest;
use crate::upstream::Voice;
use futures_util::StreamExt;

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    super::finish(routes(state), &config)
}

pub(super) fn routes(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    super::limited(
        Router::new()
            .route("/v1/audio/speech", post(speech))
            .route("/audio/speech", post(speech))
            .with_state(state),
        max_body,
    )
}

async fn speech(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::in_own_task(speak(state, headers, body)).await
}

/// The upstream's speech, or a 400 on a deployment whose upstream has none.
pub(super) fn require_speech(state: &AppState) -> Result<Arc<dyn Voice>, ApiError> {
    if let Some(voice) = &state.voice {
        return Ok(voice.clone());
    }
    Err(ApiError::BadRequest {
        message: format!(
            "The {} upstream has no speech synthesis or recognition: audio needs a key of MiniMax's \
             paid platform (`minimax_api_keys` in the tokens document or MINIMAX_API_KEY; in header \
             mode, the caller's `sk-api-…` key in the bearer), or a deployment with UPSTREAM=hailuo.",
            state.upstream().name()
        ),
        param: None,
        code: "unsupported_by_upstream",
    })
}

/// What the Hailuo voices cannot do: OpenAI's limit on `input`, their own
/// voice ids, mp3 (and what it decodes to) only.
fn hailuo_limits(request: &SpeechRequest) -> Result<(), ApiError> {
    let chars = request.input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(ApiError::invalid(
            "input",
            format!("`input` is {chars} characters long; the Hailuo voices speak at most {MAX_INPUT_CHARS} per request. Split the text."),
        ));
    }
    let voice = &request.voice;
    if voice.len() > 64
        || !voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::invalid(
            "voice",
            format!(
                "`voice` {:?} is not a voice: use alloy, echo, fable, onyx, nova or shimmer, or a Hailuo voice id (letters, digits, `_` and `-`).",
                crate::text::clip(voice, 70)
            ),
        ));
    }
    if !matches!(
        request.format,
        SpeechFormat::Mp3 | SpeechFormat::Wav | SpeechFormat::Pcm
    ) {
        return Err(ApiError::invalid(
            "response_format",
            format!(
                "`response_format` {} is not made by the Hailuo voices: use mp3 (the upstream's own audio), wav or pcm (24 kHz 16-bit mono), or add a key of MiniMax's paid platform for flac and opus.",
                request.format.name()
            ),
        ));
    }
    Ok(())
}

/// The platform's format, sample rate, and the caller's content type for
/// it; aac is made by no path (a 400).
fn platform_format(format: SpeechFormat) -> Result<(&'static str, u32), ApiError> {
    Ok(match format {
        SpeechFormat::Mp3 => ("mp3", 32_000),
        // OpenAI's pcm: 24 kHz, 16-bit, mono.
        SpeechFormat::Pcm => ("pcm", 24_000),
        SpeechFormat::Wav => ("wav", 24_000),
        SpeechFormat::Flac => ("flac", 32_000),
        SpeechFormat::Opus => ("opus", 24_000),
        SpeechFormat::Aac => {
            return Err(ApiError::invalid(
                "response_format",
                "`response_format` aac is not available: MiniMax's platform makes none and no AAC encoder is bundled. Use mp3, opus, flac, wav or pcm.".to_string(),
            ))
        }
    })
}

/// Speech on the platform, on the request's keys.
async fn platform_speak(
    state: AppState,
    client: Arc<crate::upstream::api::ApiClient>,
    tokens: crate::credentials::TokenSet,
    request: SpeechRequest,
) -> Result<Response, ApiError> {
    let (format, sample_rate) = platform_format(request.format)?;
    if !(0.5..=2.0).contains(&request.speed) {
        return Err(ApiError::invalid(
            "speed",
            format!(
                "`speed` is {}; MiniMax's platform speaks from 0.5 to 2.0 times the voice's pace.",
                request.speed
            ),
        ));
    }
    let voice = crate::speech::platform_voice(&request.voice, &state.config);
    let model = crate::speech::platform_model(&request.model, &state.config);
    tracing::info!(
        model = request.model,
        platform_model = model,
        voice = request.voice,
        upstream_voice = voice,
        chars = request.input.chars().count(),
        speed = request.speed,
        format,
        "speech requested of the platform"
    );
    let t2a = T2aRequest::new(
        model,
        &request.input,
        &voice,
        request.speed,
        format,
        sample_rate,
    );
    let (first, rest, lease) = crate::speech::Platform {
        client: &client,
        config: &state.config,
        set: &tokens,
        pool: Pool::of(&state.credentials),
    }
    .synthesize(&t2a)
    .await
    .map_err(|e| name_the_voice(e, &voice))?;
    let content_type = match request.format {
        // Opus is labelled Ogg when it is in an Ogg container (protocol 8).
        SpeechFormat::Opus if first.starts_with(b"OggS") => "audio/ogg",
        other => other.content_type(),
    };
    let (out, body) = super::Outgoing::new(4);
    super::spawn(async move {
        let _lease = lease;
        let mut rest = rest;
        if !out.deliver(first).await {
            return;
        }
        loop {
            let next = tokio::select! {
                biased;
                _ = out.caller_gone() => {
                    tracing::info!("client went away mid-speech");
                    return;
                }
                next = rest.next() => next,
            };
            match next {
                None => break,
                Some(Ok(bytes)) => {
                    if !out.deliver(bytes).await {
                        return;
                    }
                }
                Some(Err(e)) => {
                    // The body ends in an error (`out` dropped unfinished).
                    tracing::warn!(error = %e, "the platform's speech failed mid-stream");
                    return;
                }
            }
        }
        out.finish();
    });
    let mut response = Response::new(body);
    set_audio_headers(&mut response, content_type);
    Ok(response)
}

/// A voice the platform does not know is the caller's 400, naming it.
fn name_the_voice(e: ApiError, voice: &str) -> ApiError {
    match &e {
        ApiError::BadRequest { code, .. } if matches!(*code, "minimax_2054" | "minimax_20132" | "minimax_2042") => {
            ApiError::invalid(
                "voice",
                format!(
                    "The voice {:?} does not exist on MiniMax's platform (or this key has no access to it): use an OpenAI voice name or a voice id of the platform's list.",
                    crate::text::clip(voice, 70)
                ),
            )
        }
        _ => e,
    }
}

async fn speak(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tokens = state.credentials.tokens_for(&headers).await?;
    super::require_json(&headers)?;
    let body = body.map_err(|r| super::body_error(r, state.config.max_request_bytes))?;
    let request = SpeechRequest::parse(&body)?;
    if let Some(platform) = state.platform.clone().filter(|_| !tokens.keys.is_empty()) {
        return platform_speak(state, platform, tokens, request).await;
    }
    let speech = require_speech(&state)?;
    hailuo_limits(&request)?;
    let voice = resolve_voice(
        &request.model,
        &request.voice,
        &state.config.replace_audio_model,
    );
    tracing::info!(
        model = request.model,
        voice = request.voice,
        upstream_voice = voice,
        chars = request.input.chars().count(),
        speed = request.speed,
        "speech requested"
    );
    let pool = Pool::of(&state.credentials);
    let mut synthesis = Synthesis::open(
        state.upstream().clone(),
        speech,
        &state.config,
        &tokens,
        pool,
        &request.input,
        &voice,
    )
    .await?;
    let format = request.format;
    let first = match part(&synthesis, 0, format).await {
        Ok(bytes) => bytes,
        Err(e) => {
            synthesis.cleanup().await;
            return Err(e);
        }
    };
    if format == SpeechFormat::Wav {
        return whole_wav(synthesis, first).await;
    }
    let (out, body) = super::Outgoing::new(4);
    super::spawn(stream_parts(synthesis, first, format, out));
    let mut response = Response::new(body);
    set_audio_headers(&mut response, format.content_type());
    Ok(response)
}

fn set_audio_headers(response: &mut Response, content_type: &'static str) {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Part `index`, in the caller's format: mp3 as the upstream made it,
/// else decoded to 24 kHz PCM (on a blocking thread: it is CPU work).
fn part(
    synthesis: &Synthesis,
    index: usize,
    format: SpeechFormat,
) -> impl std::future::Future<Output = Result<Bytes, ApiError>> + Send + 'static {
    let (download, total) = (synthesis.part(index), synthesis.parts.len());
    convert(download, index, total, format)
}

async fn convert(
    download: impl std::future::Future<Output = Result<Bytes, crate::upstream::UpstreamError>>,
    index: usize,
    total: usize,
    format: SpeechFormat,
) -> Result<Bytes, ApiError> {
    let mp3 = download.await?;
    if format == SpeechFormat::Mp3 {
        return Ok(mp3);
    }
    let pcm = audio::off_thread(move || audio::mp3_to_pcm16(mp3)).await;
    pcm.map(Bytes::from).map_err(|e| match e {
        AudioError::Encoder(m) => ApiError::Internal(m),
        other => ApiError::BadGateway(format!(
            "The upstream's speech (part {} of {total}) could not be decoded: {other}",
            index + 1,
        )),
    })
}

async fn whole_wav(mut synthesis: Synthesis, first: Bytes) -> Result<Response, ApiError> {
    let mut pcm = first.to_vec();
    let mut failure = None;
    for index in 1..synthesis.parts.len() {
        match part(&synthesis, index, SpeechFormat::Wav).await {
            Ok(more) => pcm.extend_from_slice(&more),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    synthesis.cleanup().await;
    if let Some(e) = failure {
        return Err(e);
    }
    let data_len = u32::try_from(pcm.len()).map_err(|_| {
        ApiError::BadGateway("The upstream's speech is longer than a wav file holds.".into())
    })?;
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(&audio::wav_header(data_len));
    wav.extend_from_slice(&pcm);
    let mut response = Response::new(Body::from(wav));
    set_audio_headers(&mut response, SpeechFormat::Wav.content_type());
    Ok(response)
}

async fn stream_parts(
    mut synthesis: Synthesis,
    first: Bytes,
    format: SpeechFormat,
    out: super::Outgoing,
) {
    let total = synthesis.parts.len();
    let mut client_gone = !out.deliver(first).await;
    let mut index = 1;
    while !client_gone && index < total {
        let next = tokio::select! {
            biased;
            _ = out.caller_gone() => { client_gone = true; break; }
            next = part(&synthesis, index, format) => next,
        };
        match next {
            Ok(bytes) => client_gone = !out.deliver(bytes).await,
            Err(e) => {
                tracing::warn!(error = %e, part = index + 1, parts = total, "speech failed mid-stream");
                // The conversation goes first; then the body ends in an
                // error (`out` dropped unfinished).
                synthesis.cleanup().await;
                return;
            }
        }
        index += 1;
    }
    if client_gone {
        tracing::info!(
            parts_sent = index,
            parts = total,
            "client went away mid-speech"
        );
    } else {
        out.finish();
    }
    // The body ends when `out` is dropped: after the cleanup.
    synthesis.cleanup().await;
}

#[cfg(test)]
#[path = "speech_tests.rs"]
mod tests;
