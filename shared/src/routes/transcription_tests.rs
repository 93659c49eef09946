//! The transcription route in-process: multipart forms as the SDKs send
//! them, the transcoding checked by decoding what reached the upstream,
//! the caller's mistakes refused before any upstream call.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::router;
use crate::audio::tests::tone_wav;
use crate::config::Config;
use crate::testing::{error_message, json, state, FakeUpstream, VoiceScript};

const BOUNDARY: &str = "----sdk-boundary-7MA4YWxkTrZu0gW";

/// A multipart form: text fields, then the file (if any) as `file`.
fn form(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((file_name, bytes)) = file {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn request(tokens: &str, body: Vec<u8>) -> Request<Body> {
    Request::post("/v1/audio/transcriptions")
        .header("authorization", format!("Bearer {tokens}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap()
}

fn fake() -> FakeUpstream {
    FakeUpstream::answering("x", Duration::ZERO).speaking(VoiceScript::default())
}

/// The duration of an mp3, decoded by the same decoder.
fn mp3_seconds(mp3: &[u8]) -> f64 {
    let (mut frames, mut rate) = (0usize, 0u32);
    crate::audio::decode::decode(
        &crate::audio::decode::ANY,
        mp3.to_vec().into(),
        |s, ch, r| {
            frames += s.len() / ch;
            rate = r;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(rate, 44_100, "the voice call's mp3 is 44.1 kHz");
    frames as f64 / f64::from(rate)
}

#[tokio::test]
async fn a_wav_is_sent_as_mp3_and_its_transcript_comes_back() {
    let fake = fake();
    let app = router(state(&fake, Config::default()));
    let wav = tone_wav(3.0, 16_000, 1);
    let response = app
        .clone()
        .oneshot(request(
            "tok-a",
            form(
                &[("model", "whisper-1"), ("language", "zh")],
                Some(("clip.wav", &wav)),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    let sent = fake.record(|r| r.transcriptions[0].1.clone());
    assert_eq!(body["text"], format!("heard {} bytes", sent.len()));
    assert_eq!(
        body["usage"],
        serde_json::json!({"type": "duration", "seconds": 3})
    );
    let seconds = mp3_seconds(&sent);
    assert!((seconds - 3.0).abs() < 0.1, "{seconds}");
    // As text: the transcript and a newline, as OpenAI's.
    let response = app
        .oneshot(request(
            "tok-a",
            form(
                &[("model", "whisper-1"), ("response_format", "text")],
                Some(("clip.wav", &wav)),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(text.starts_with(b"heard ") && text.ends_with(b" bytes\n"));
}

#[tokio::test]
async fn silence_is_an_empty_transcript_and_a_dead_token_fails_over() {
    let fake = FakeUpstream::answering("x", Duration::ZERO).speaking(VoiceScript {
        transcripts: [Ok(String::new())].into(),
        ..VoiceScript::default()
    });
    fake.kill("tok-dead");
    let app = router(state(&fake, Config::default()));
    let response = app
        .oneshot(request(
            "tok-dead,tok-live",
            form(
                &[("model", "whisper-1")],
                Some(("quiet.wav", &tone_wav(1.0, 8_000, 2))),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["text"], "");
    fake.record(|r| assert_eq!(r.transcriptions.len(), 1));
}

#[tokio::test]
async fn bad_files_and_forms_are_refused_before_any_upstream_call() {
    let fake = fake();
    let app = router(state(
        &fake,
        Config::from_lookup(|k| (k == "MAX_REQUEST_BYTES").then(|| "200000".into())),
    ));
    let send = |body: Vec<u8>| app.clone().oneshot(request("tok-a", body));
    let wav = tone_wav(1.0, 16_000, 1);
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            form(
                &[("model", "whisper-1")],
                Some(("notes.mp3", b"just some text, not audio\n")),
            ),
            StatusCode::BAD_REQUEST,
            "text",
        ),
        (
            form(&[("model", "whisper-1")], Some(("cut.wav", &wav[..30]))),
            StatusCode::BAD_REQUEST,
            "wav",
        ),
        (
            form(
                &[("model", "whisper-1")],
                Some((
                    "image.mp3",
                    &[0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0, 0, 13][..],
                )),
            ),
            StatusCode::BAD_REQUEST,
            "image/png",
        ),
        (
            form(&[("model", "whisper-1")], None),
            StatusCode::BAD_REQUEST,
            "'file'",
        ),
        (
            form(
                &[("model", "whisper-1"), ("response_format", "srt")],
                Some(("a.wav", &wav)),
            ),
            StatusCode::BAD_REQUEST,
            "timestamps",
        ),
        (
            form(
                &[("model", "whisper-1")],
                Some(("long.wav", &tone_wav(7.0, 16_000, 1))),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "6 MB",
        ),
    ];
    for (body, status, says) in cases {
        let response = send(body).await.unwrap();
        assert_eq!(response.status(), status, "{says}");
        let message = error_message(response).await;
        assert!(message.contains(says), "{says}: {message}");
    }
    let not_multipart = Request::post("/v1/audio/transcriptions")
        .header("authorization", "Bearer tok-a")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = app.clone().oneshot(not_multipart).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = error_message(response).await;
    assert!(
        message.contains(r#"the request has Content-Type "application/json""#),
        "{message}"
    );
    let no_boundary = Request::post("/v1/audio/transcriptions")
        .header("authorization", "Bearer tok-a")
        .header("content-type", "multipart/form-data")
        .body(Body::from(form(&[("model", "whisper-1")], None)))
        .unwrap();
    let response = app.clone().oneshot(no_boundary).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = error_message(response).await;
    assert!(message.contains("(with its boundary)"), "{message}");
    fake.record(|r| assert!(r.transcriptions.is_empty()));
    // An upstream without speech says so.
    let mute = FakeUpstream::answering("x", Duration::ZERO).mute();
    let app = router(state(&mute, Config::default()));
    let response = app
        .oneshot(request(
            "tok-a",
            form(&[("model", "whisper-1")], Some(("a.wav", &wav))),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = json(response).await;
    assert_eq!(body["error"]["code"], "unsupported_by_upstream");
}
