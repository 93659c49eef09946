//! The speech route in-process, over the scripted upstream on tokio's paused
//! clock: voices, formats, failover, the poll timeout, failures mid-stream,
//! a caller that goes away, and the conversation deleted every time before
//! the body ends.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::router;
use crate::audio::tests::tone_mp3;
use crate::config::Config;
use crate::testing::{error_message, state, FakeUpstream, VoiceScript};
use crate::upstream::UpstreamError;

fn speech_request(tokens: &str, body: Value) -> Request<Body> {
    Request::post("/v1/audio/speech")
        .header("authorization", format!("Bearer {tokens}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn speak(app: &axum::Router, tokens: &str, body: Value) -> axum::http::Response<Body> {
    app.clone()
        .oneshot(speech_request(tokens, body))
        .await
        .unwrap()
}

fn parts() -> Vec<bytes::Bytes> {
    // Parts at 32 kHz, as a CDN would hand them out: 0.5 s, 0.25 s, 0.75 s.
    [0.5, 0.25, 0.75]
        .iter()
        .map(|s| bytes::Bytes::from(tone_mp3(*s, 32_000)))
        .collect()
}

fn fake() -> FakeUpstream {
    FakeUpstream::answering("复述的内容", Duration::from_millis(10)).speaking(VoiceScript {
        parts: parts(),
        ..VoiceScript::default()
    })
}

async fn body_bytes(response: axum::http::Response<Body>) -> Result<Vec<u8>, String> {
    let mut stream = response.into_body().into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[tokio::test(start_paused = true)]
async fn mp3_parts_stream_in_order_and_the_conversation_goes_first() {
    let fake = fake();
    let app = router(state(&fake, Config::default()));
    let response = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1-hd", "input": "第一行\n(第二行)", "voice": "alloy"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    let body = body_bytes(response).await.unwrap();
    assert_eq!(body, parts().concat(), "the parts, concatenated, unchanged");
    fake.record(|r| {
        assert_eq!(r.syntheses.len(), 1);
        assert_eq!(
            r.syntheses[0].1, "msg1",
            "the repeat turn's message is spoken"
        );
        assert_eq!(r.syntheses[0].2, "xiaomo_sft", "alloy under tts-1-hd");
        assert!(
            r.chats[0].1.contains("第一行。 第二行 "),
            "{}",
            r.chats[0].1
        );
        assert_eq!(r.downloads, ["part0", "part1", "part2"]);
        assert_eq!(
            r.deleted.len(),
            1,
            "the repeat turn's conversation is deleted"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn pcm_and_wav_are_24k_mono_of_the_parts_length() {
    for format in ["pcm", "wav"] {
        let fake = fake();
        let app = router(state(
            &fake,
            Config::from_lookup(|k| (k == "REPLACE_AUDIO_MODEL").then(|| "JayChou_hailuo".into())),
        ));
        let response = speak(
            &app,
            "tok-a",
            json!({"model": "tts-1", "input": "你好", "voice": "alloy", "response_format": format}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{format}");
        assert_eq!(
            response.headers()["content-type"],
            format!("audio/{format}")
        );
        let body = body_bytes(response).await.unwrap();
        let pcm = if format == "wav" {
            assert_eq!(&body[..4], b"RIFF");
            let data_len = u32::from_le_bytes(body[40..44].try_into().unwrap()) as usize;
            assert_eq!(
                data_len,
                body.len() - 44,
                "the header carries the true length"
            );
            &body[44..]
        } else {
            &body[..]
        };
        // 1.5 s of parts, give or take LAME's padding in each of the three.
        let seconds = pcm.len() as f64 / 48_000.0;
        assert!((1.45..1.7).contains(&seconds), "{format}: {seconds} s");
        fake.record(|r| {
            assert_eq!(
                r.syntheses[0].2, "JayChou_hailuo",
                "REPLACE_AUDIO_MODEL wins"
            );
            assert_eq!(r.deleted.len(), 1);
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_token_fails_over_before_the_first_byte() {
    let fake = fake();
    fake.kill("tok-dead");
    let app = router(state(&fake, Config::default()));
    let response = speak(
        &app,
        "tok-dead,tok-live",
        json!({"model": "tts-1", "input": "你好", "voice": "Guodegang_hailuo"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await.unwrap(), parts().concat());
    fake.record(|r| {
        assert_eq!(r.syntheses.len(), 1);
        assert_eq!(
            r.syntheses[0].2, "Guodegang_hailuo",
            "a Hailuo voice id passes through"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn a_synthesis_that_never_gets_ready_is_a_504_and_not_asked_again() {
    let fake = FakeUpstream::answering("x", Duration::from_millis(10)).speaking(VoiceScript {
        parts: parts(),
        synthesis_failures: [UpstreamError::Timeout(
            "the speech was not ready after 30 s (HAILUO_TTS_TIMEOUT_MS)".into(),
        )]
        .into(),
        ..VoiceScript::default()
    });
    let app = router(state(&fake, Config::default()));
    let response = speak(
        &app,
        "tok-a,tok-b",
        json!({"model": "tts-1", "input": "你好", "voice": "alloy"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(error_message(response)
        .await
        .contains("not ready after 30 s"));
    fake.record(|r| {
        assert_eq!(r.syntheses.len(), 1, "not asked of the second account");
        assert_eq!(
            r.deleted.len(),
            1,
            "the repeat turn is deleted all the same"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn a_part_failing_mid_stream_cuts_the_body_with_an_error() {
    let fake = FakeUpstream::answering("x", Duration::from_millis(10)).speaking(VoiceScript {
        parts: parts(),
        failing_part: Some((
            1,
            UpstreamError::Http {
                status: 404,
                message: "a speech part could not be downloaded".into(),
            },
        )),
        ..VoiceScript::default()
    });
    let app = router(state(&fake, Config::default()));
    let response = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1", "input": "你好", "voice": "alloy"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "the first part was in");
    let cut = body_bytes(response).await;
    assert!(
        cut.is_err(),
        "the body ends in an error, not as a whole answer"
    );
    fake.record(|r| assert_eq!(r.deleted.len(), 1));
    // The first part failing is still an error status.
    let fake = FakeUpstream::answering("x", Duration::from_millis(10)).speaking(VoiceScript {
        parts: parts(),
        failing_part: Some((0, UpstreamError::Transport("reset".into()))),
        ..VoiceScript::default()
    });
    let app = router(state(&fake, Config::default()));
    let response = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1", "input": "你好", "voice": "alloy"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    fake.record(|r| assert_eq!(r.deleted.len(), 1));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_still_gets_the_conversation_deleted() {
    let fake = fake().with_delete_taking(Duration::from_secs(2));
    let app = router(state(&fake, Config::default()));
    let response = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1", "input": "你好", "voice": "alloy"}),
    )
    .await;
    let mut stream = response.into_body().into_data_stream();
    assert!(stream.next().await.is_some());
    drop(stream);
    // The task that owns the synthesis finishes on its own.
    while fake.record(|r| r.deleted.is_empty()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn mistakes_are_400s_before_any_upstream_call() {
    let fake = fake();
    let app = router(state(&fake, Config::default()));
    for (body, param) in [
        (json!({"model": "tts-1", "voice": "alloy"}), "input"),
        (
            json!({"model": "tts-1", "input": "x", "voice": "alloy", "response_format": "flac"}),
            "response_format",
        ),
        (
            json!({"model": "tts-1", "input": "x".repeat(4097), "voice": "alloy"}),
            "input",
        ),
    ] {
        let response = app
            .clone()
            .oneshot(speech_request("tok-a", body))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = crate::testing::json(response).await;
        assert_eq!(body["error"]["param"], param);
    }
    let mute = FakeUpstream::answering("x", Duration::ZERO).mute();
    let app = router(state(&mute, Config::default()));
    let response = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1", "input": "x", "voice": "alloy"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_message(response)
        .await
        .contains("no speech synthesis"));
    fake.record(|r| assert!(r.chats.is_empty()));
    mute.record(|r| assert!(r.chats.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn two_voices_on_one_account_take_turns() {
    // The voice is the account's setting: a second synthesis on the same
    // token waits for the first to finish (its lease), never interleaving
    // "set voice" between the other's set and poll.
    let fake = fake().with_delete_taking(Duration::from_millis(500));
    let app = router(state(&fake, Config::default()));
    let first = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1", "input": "一", "voice": "alloy"}),
    );
    let second = speak(
        &app,
        "tok-a",
        json!({"model": "tts-1", "input": "二", "voice": "echo"}),
    );
    let (first, second) = tokio::join!(async { body_bytes(first.await).await }, async {
        body_bytes(second.await).await
    });
    assert_eq!(first.unwrap(), parts().concat());
    assert_eq!(second.unwrap(), parts().concat());
    fake.record(|r| {
        let one = [
            "chat",
            "synthesize",
            "download",
            "download",
            "download",
            "delete",
        ];
        assert_eq!(
            r.timeline,
            [one, one].concat(),
            "one synthesis after the other"
        );
        let voices: Vec<&str> = r.syntheses.iter().map(|s| s.2.as_str()).collect();
        assert!(voices.contains(&"male-botong") && voices.contains(&"Podcast_girl"));
    });
}
