//! `POST /v1/audio/transcriptions`: the caller's audio recognized by
//! MiniMax's paid platform (`asr-1.0`) when the request has a platform key:
//! the containers it takes go as they are, any other (a browser's webm)
//! is transcoded to mp3 first; `verbose_json`, `srt` and `vtt` come with
//! its timestamps. Else (`UPSTREAM=hailuo`) decoded and re-encoded
//! in-process to the mp3 the voice call takes, then recognized upstream.
//!
//! A function URL takes at most 6 MB per request (`MAX_REQUEST_BYTES`
//! enforces it here too, so a local server behaves the same): a larger
//! upload is a 413 that says so.

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::AppState;
use crate::answer::Pool;
use crate::audio::{self, AudioError};
use crate::error::ApiError;
use crate::openai::audio::{TranscriptFormat, TranscriptionFields};
use crate::upstream::api::speech::{Segment, Transcribed, Transcript};

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    super::finish(routes(state), &config)
}

pub(super) fn routes(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    super::limited(
        Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/audio/transcriptions", post(transcriptions))
            .with_state(state),
        max_body,
    )
}

async fn transcriptions(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    super::in_own_task(transcribe(state, headers, form)).await
}

/// The uploaded file: its name as sent, and its bytes.
struct Upload {
    name: String,
    bytes: bytes::Bytes,
}

fn too_large(max: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "The upload is larger than {:.1} MB, the most this service takes per request (a Lambda function URL takes at most 6 MB). Send a shorter clip, or a more compressed format (mp3, m4a, ogg/Opus).",
        max as f64 / 1_000_000.0
    ))
}

fn form_error(e: MultipartError, max: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max)
    } else if let Some(stalled) = super::stalled(&e) {
        stalled
    } else {
        ApiError::bad_body(format!(
            "The multipart form could not be read: {}.",
            e.body_text()
        ))
    }
}

/// The form as OpenAI's: `file` and text fields.
async fn read_form(
    mut form: Multipart,
    max: usize,
) -> Result<(Option<Upload>, Vec<(String, String)>), ApiError> {
    let (mut file, mut fields) = (None, Vec::new());
    while let Some(field) = form.next_field().await.map_err(|e| form_error(e, max))? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let file_name = field.file_name().unwrap_or("audio").to_string();
            let bytes = field.bytes().await.map_err(|e| form_error(e, max))?;
            file = Some(Upload {
                name: file_name,
                bytes,
            });
        } else {
            let value = field.text().await.map_err(|e| form_error(e, max))?;
            fields.push((name, value));
        }
    }
    Ok((file, fields))
}

async fn transcribe(
    state: AppState,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let tokens = state.credentials.tokens_for(&headers).await?;
    let max = state.config.max_request_bytes;
    let form = form.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max)
        } else {
            // axum's own text ("Invalid `boundary`") is about its parser, not
            // about what the caller sent: name the Content-Type instead.
            let sent = match headers.get(header::CONTENT_TYPE) {
                None => "no Content-Type".to_string(),
                Some(v) => format!("Content-Type {:?}", super::shown(v)),
            };
            ApiError::UnsupportedMediaType(format!(
                "This endpoint takes a multipart/form-data body (with its boundary) and the audio in a `file` field; the request has {sent}. The OpenAI SDKs send this form themselves: pass the file to `audio.transcriptions.create`."
            ))
        }
    })?;
    let (file, fields) = read_form(form, max).await?;
    let request = TranscriptionFields::parse(&fields)?;
    let file = file.ok_or_else(|| ApiError::missing("file"))?;
    if let Some(platform) = state.platform.clone().filter(|_| !tokens.keys.is_empty()) {
        return platform_transcribe(&state, &platform, &tokens, &request, file).await;
    }
    let voice = super::speech::require_speech(&state)?;
    if request.format.timed() {
        return Err(ApiError::invalid(
            "response_format",
            "This `response_format` needs timestamps, which the Hailuo voice call does not give: use json or text, or add a key of MiniMax's paid platform.".to_string(),
        ));
    }
    let limit = state.config.transcription_max_seconds;
    let size = file.bytes.len();
    let mp3 = audio::off_thread(move || audio::transcode_to_mp3(file.bytes, limit))
        .await
        .map_err(|e| match e {
            AudioError::Encoder(m) => ApiError::Internal(m),
            AudioError::Unsupported(m) | AudioError::Corrupt(m) | AudioError::TooLong(m) => {
                ApiError::invalid(
                    "file",
                    format!("{:?}: {m}", crate::text::clip(&file.name, 80)),
                )
            }
        })?;
    tracing::info!(
        model = request.model,
        detected = mp3.detected,
        bytes_in = size,
        seconds = format!("{:.2}", mp3.seconds),
        mp3_bytes = mp3.bytes.len(),
        "transcoded"
    );
    let pool = Pool::of(&state.credentials);
    let text = crate::speech::transcribe(
        state.upstream().clone(),
        voice,
        &state.config,
        &tokens,
        pool,
        mp3.bytes.into(),
    )
    .await?;
    Ok(answer(&request, &text, Some(mp3.seconds), &[]))
}

/// The transcript in the caller's format (OpenAI's shapes).
fn answer(
    request: &TranscriptionFields,
    text: &str,
    seconds: Option<f64>,
    segments: &[Segment],
) -> Response {
    let usage =
        seconds.map(|s| serde_json::json!({"type": "duration", "seconds": s.ceil() as u64}));
    match request.format {
        TranscriptFormat::Json | TranscriptFormat::Srt | TranscriptFormat::Vtt => {
            let mut body = serde_json::json!({ "text": text });
            if let Some(usage) = usage {
                body["usage"] = usage;
            }
            Json(body).into_response()
        }
        TranscriptFormat::VerboseJson => {
            let segments: Vec<_> = segments
                .iter()
                .enumerate()
                .map(|(id, s)| {
                    serde_json::json!({"id": id, "seek": 0, "start": s.start, "end": s.end, "text": s.text,
                        "tokens": [], "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0,
                        "no_speech_prob": 0.0})
                })
                .collect();
            let mut body = serde_json::json!({
                "task": "transcribe",
                "language": request.language.as_deref().unwrap_or(""),
                "duration": seconds.unwrap_or(0.0),
                "text": text,
                "segments": segments,
            });
            if let Some(usage) = usage {
                body["usage"] = usage;
            }
            Json(body).into_response()
        }
        TranscriptFormat::Text => plain(format!("{text}\n")),
    }
}

fn plain(text: String) -> Response {
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Recognition on the platform: the file as it is where the platform takes
/// its container, else transcoded to mp3 (at most the platform's 500 s).
async fn platform_transcribe(
    state: &AppState,
    platform: &std::sync::Arc<crate::upstream::api::ApiClient>,
    tokens: &crate::credentials::TokenSet,
    request: &TranscriptionFields,
    file: Upload,
) -> Result<Response, ApiError> {
    let (bytes, ext, mime, transcoded) = match audio::platform_container(&file.bytes) {
        Some((ext, mime)) => (file.bytes, ext, mime, false),
        None => {
            let limit = state.config.transcription_max_seconds.min(500);
            let name = file.name.clone();
            let mp3 = audio::off_thread(move || audio::transcode_to_mp3(file.bytes, limit))
                .await
                .map_err(|e| match e {
                    AudioError::Encoder(m) => ApiError::Internal(m),
                    AudioError::Unsupported(m)
                    | AudioError::Corrupt(m)
                    | AudioError::TooLong(m) => ApiError::invalid(
                        "file",
                        format!("{:?}: {m}", crate::text::clip(&name, 80)),
                    ),
                })?;
            (bytes::Bytes::from(mp3.bytes), "mp3", "audio/mpeg", true)
        }
    };
    let stem = file
        .name
        .rsplit_once('.')
        .map_or(file.name.as_str(), |(stem, _)| stem);
    let name = format!("{}.{ext}", crate::text::clip(stem, 80));
    let format = match request.format {
        TranscriptFormat::Json | TranscriptFormat::Text => "json",
        TranscriptFormat::VerboseJson => "verbose_json",
        TranscriptFormat::Srt => "srt",
        TranscriptFormat::Vtt => "vtt",
    };
    tracing::info!(
        model = request.model,
        container = ext,
        transcoded,
        bytes = bytes.len(),
        format,
        "transcription asked of the platform"
    );
    let transcript = crate::speech::Platform {
        client: platform,
        config: &state.config,
        set: tokens,
        pool: Pool::of(&state.credentials),
    }
    .transcribe(Transcribed {
        bytes,
        name: &name,
        mime,
        format,
        language: request.language.as_deref(),
    })
    .await?;
    Ok(match transcript {
        Transcript::Document(text) => plain(text),
        Transcript::Text {
            text,
            duration,
            segments,
        } => answer(request, &text, duration, &segments),
    })
}

#[cfg(test)]
#[path = "transcription_tests.rs"]
mod tests;
