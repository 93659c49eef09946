//! The platform's speech (protocol sections 4 and 5): T2A v2 synthesis,
//! streamed or whole, and `asr-1.0` recognition. Adapter code: what a
//! caller asked for arrives already mapped (model, voice, format), and
//! failures are the code table's (`errors.rs`), so the pool cools or
//! buries a key as for chat.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::client::ApiClient;
use super::config::ApiConfig;
use super::errors::BaseResp;
use super::errors::Classifier;
use crate::redact::fingerprint;
use crate::upstream::UpstreamError;

/// The platform's limit on `text`: fewer than 10,000 characters.
pub const MAX_TEXT_CHARS: usize = 9_999;
/// The platform's speech models (4.1) and its recognizer, for the model list.
pub const MODELS: [&str; 9] = [
    "speech-2.8-hd",
    "speech-2.8-turbo",
    "speech-2.6-hd",
    "speech-2.6-turbo",
    "speech-02-hd",
    "speech-02-turbo",
    "speech-01-hd",
    "speech-01-turbo",
    "asr-1.0",
];
/// The recognizer's limits: 50 MB, 500 s.
pub const MAX_ASR_BYTES: usize = 50 * 1024 * 1024;

/// One synthesis, as the platform takes it (4.1).
#[derive(Debug, Serialize)]
pub struct T2aRequest<'a> {
    pub model: &'a str,
    pub text: &'a str,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    pub voice_setting: VoiceSetting<'a>,
    pub audio_setting: AudioSetting,
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub exclude_aggregated_audio: bool,
}

#[derive(Debug, Serialize)]
pub struct VoiceSetting<'a> {
    pub voice_id: &'a str,
    pub speed: f64,
    pub vol: f64,
    pub pitch: i32,
}

#[derive(Debug, Serialize)]
pub struct AudioSetting {
    pub sample_rate: u32,
    pub bitrate: u32,
    pub format: &'static str,
    pub channel: u32,
}

impl<'a> T2aRequest<'a> {
    /// `format` in the platform's words (mp3, pcm, wav, flac, opus) at
    /// `sample_rate`, mono; streamed only where the chunks concatenate.
    pub fn new(
        model: &'a str,
        text: &'a str,
        voice: &'a str,
        speed: f64,
        format: &'static str,
        sample_rate: u32,
    ) -> Self {
        let stream = matches!(format, "mp3" | "pcm");
        Self {
            model,
            text,
            stream,
            stream_options: stream.then_some(StreamOptions {
                exclude_aggregated_audio: true,
            }),
            voice_setting: VoiceSetting {
                voice_id: voice,
                speed,
                vol: 1.0,
                pitch: 0,
            },
            audio_setting: AudioSetting {
                sample_rate,
                bitrate: 128_000,
                format,
                channel: 1,
            },
        }
    }
}

#[derive(Deserialize)]
struct T2aAnswer {
    #[serde(default)]
    data: Option<T2aData>,
    #[serde(default)]
    base_resp: Option<BaseResp>,
}

#[derive(Deserialize)]
struct T2aData {
    #[serde(default)]
    audio: String,
    #[serde(default)]
    status: u32,
}

/// The audio's bytes, in order: a stream ends at the platform's last
/// event (`status: 2`, whose aggregate audio is never sent again).
pub type AudioStream = BoxStream<'static, Result<Bytes, UpstreamError>>;

fn hex_audio(hex: &str) -> Result<Bytes, UpstreamError> {
    hex::decode(hex.trim())
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Protocol(format!("the platform's audio is not hex: {e}")))
}

/// One event, or the whole answer (`whole`: its only event's audio is
/// the audio): its audio, whether it is the last, or its failure.
fn read_event(
    config: &ApiConfig,
    fingerprint: &str,
    text: &str,
    whole: bool,
) -> Result<(Option<Bytes>, bool), UpstreamError> {
    let answer: T2aAnswer = serde_json::from_str(text).map_err(|e| {
        UpstreamError::Protocol(format!("a speech event is not the JSON expected: {e}"))
    })?;
    if let Some(base) = answer.base_resp.filter(|b| b.status_code != 0) {
        return Err(Classifier {
            config,
            fingerprint,
        }
        .by_code(200, base.status_code, base.status_msg));
    }
    let Some(data) = answer.data else {
        return Err(UpstreamError::Protocol(
            "a speech answer without data".into(),
        ));
    };
    let last = data.status == 2 || whole;
    // A stream's final event repeats the whole audio unless excluded: it
    // is never sent twice.
    if (last && !whole) || data.audio.is_empty() {
        return Ok((None, last));
    }
    Ok((Some(hex_audio(&data.audio)?), last))
}

impl ApiClient {
    /// A synthesis: whole (one chunk) or streamed, as `request.stream` says.
    pub async fn synthesize(
        &self,
        key: &str,
        request: &T2aRequest<'_>,
    ) -> Result<AudioStream, UpstreamError> {
        let (http, in_flight) = self.http().take();
        let response = http
            .post(format!("{}/v1/t2a_v2", self.config().tts_base_url))
            .headers(self.headers(
                key,
                if request.stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )?)
            .timeout(self.config().timeout)
            .json(request)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(key, response).await);
        }
        let is_sse = crate::upstream::is_event_stream(&response);
        let fp = fingerprint(key);
        if !request.stream || !is_sse {
            // Whole: one JSON answer (or a failure under HTTP 200).
            let body = response.bytes().await?;
            return match read_event(self.config(), &fp, &String::from_utf8_lossy(&body), true)? {
                (Some(audio), _) => {
                    Ok(futures_util::stream::once(async move { Ok(audio) }).boxed())
                }
                (None, _) => Err(UpstreamError::Protocol(
                    "the platform's speech was empty".into(),
                )),
            };
        }
        let config = self.config().clone();
        let events = in_flight.hold(response.bytes_stream()).eventsource();
        Ok(
            futures_util::stream::unfold((Box::pin(events), false), move |(mut events, done)| {
                let (config, fp) = (config.clone(), fp.clone());
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        match events.next().await {
                            None => {
                                return Some((
                                    Err(UpstreamError::Transport(
                                        "the speech ended before its last event (truncated)".into(),
                                    )),
                                    (events, true),
                                ))
                            }
                            Some(Err(e)) => {
                                let e = match e {
                                    eventsource_stream::EventStreamError::Transport(e) => {
                                        UpstreamError::from(e)
                                    }
                                    other => UpstreamError::Protocol(other.to_string()),
                                };
                                return Some((Err(e), (events, true)));
                            }
                            Some(Ok(event)) if event.data.trim().is_empty() => continue,
                            Some(Ok(event)) if event.data.trim() == "[DONE]" => return None,
                            Some(Ok(event)) => match read_event(&config, &fp, &event.data, false) {
                                Ok((Some(audio), last)) => {
                                    return Some((Ok(audio), (events, last)))
                                }
                                Ok((None, true)) => return None,
                                Ok((None, false)) => continue,
                                Err(e) => return Some((Err(e), (events, true))),
                            },
                        }
                    }
                }
            })
            .boxed(),
        )
    }

    /// A recognition (5): the file as it is, `format` in the platform's
    /// words (json, verbose_json, srt, vtt), the language as the header.
    pub async fn transcribe(
        &self,
        key: &str,
        file: Transcribed<'_>,
    ) -> Result<Transcript, UpstreamError> {
        if file.bytes.len() > MAX_ASR_BYTES {
            return Err(UpstreamError::TooLarge(format!(
                "the audio is {} bytes; the platform's recognizer takes at most 50 MB",
                file.bytes.len()
            )));
        }
        let part = reqwest::multipart::Part::stream(file.bytes.clone())
            .file_name(file.name.to_string())
            .mime_str(file.mime)
            .map_err(|e| {
                UpstreamError::Protocol(format!("the audio's type is not a MIME type: {e}"))
            })?;
        let form = reqwest::multipart::Form::new()
            .text("model", self.config().asr_model.clone())
            .text("response_format", file.format)
            .text("stream", "false")
            .part("file", part);
        let (http, _in_flight) = self.http().take();
        let mut call = http
            .post(format!("{}/v1/speech_to_text", self.config().base_url))
            .headers(self.headers(key, "application/json")?)
            .timeout(self.config().timeout)
            .multipart(form);
        if let Some(language) = file.language.filter(|l| !l.is_empty()) {
            call = call.header("language", language);
        }
        let response = call.send().await?;
        if !response.status().is_success() {
            return Err(self.failure(key, response).await);
        }
        let body = crate::upstream::read_capped(response, 16 * 1024 * 1024).await;
        if matches!(file.format, "srt" | "vtt") {
            return Ok(Transcript::Document(body));
        }
        let value: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| UpstreamError::Protocol("the recognizer's answer is not JSON".into()))?;
        if value["base_resp"]["status_code"]
            .as_i64()
            .is_some_and(|c| c != 0)
            || value.get("error").is_some()
        {
            let fp = fingerprint(key);
            return Err(Classifier {
                config: self.config(),
                fingerprint: &fp,
            }
            .classify(200, &body));
        }
        let segments = value["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Segment {
                start: s["start"].as_f64().unwrap_or(0.0),
                end: s["end"].as_f64().unwrap_or(0.0),
                text: s["text"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        Ok(Transcript::Text {
            text: value["text"].as_str().unwrap_or_default().to_string(),
            duration: value["duration"].as_f64(),
            segments,
        })
    }
}

/// What a recognition sends.
pub struct Transcribed<'a> {
    pub bytes: Bytes,
    pub name: &'a str,
    pub mime: &'a str,
    pub format: &'static str,
    pub language: Option<&'a str>,
}

/// What a recognition gives: text (with its duration and timed segments
/// where asked), or a subtitle document.
#[derive(Debug)]
pub enum Transcript {
    Text {
        text: String,
        duration: Option<f64>,
        segments: Vec<Segment>,
    },
    Document(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::api::config::tests::config;

    fn event(text: &str, whole: bool) -> Result<(Option<Bytes>, bool), UpstreamError> {
        read_event(&config(&[]), "fp", text, whole)
    }

    #[test]
    fn events_give_their_audio_and_the_aggregate_is_never_sent_again() {
        let part = r#"{"data":{"audio":"fffb90","status":1},"base_resp":{"status_code":0,"status_msg":""}}"#;
        assert_eq!(
            event(part, false).unwrap(),
            (Some(Bytes::from_static(b"\xff\xfb\x90")), false)
        );
        let last = r#"{"data":{"audio":"fffb90fffb90","status":2},"extra_info":{},"base_resp":{"status_code":0}}"#;
        assert_eq!(event(last, false).unwrap(), (None, true));
        // A whole answer's only event is its audio.
        assert_eq!(event(last, true).unwrap().0.map(|b| b.len()), Some(6));
        // `data: null` with a failure, mid-stream or whole.
        let failed =
            r#"{"data":null,"base_resp":{"status_code":2054,"status_msg":"voice id not exist"}}"#;
        assert!(matches!(
            event(failed, true),
            Err(UpstreamError::InvalidRequest {
                code: "minimax_2054",
                ..
            })
        ));
        let cooling = r#"{"data":{"audio":"","status":1},"base_resp":{"status_code":1002,"status_msg":"rpm"}}"#;
        assert!(matches!(
            event(cooling, false),
            Err(UpstreamError::Cooling { .. })
        ));
        assert!(matches!(
            event(r#"{"data":{"audio":"xyz","status":1}}"#, false),
            Err(UpstreamError::Protocol(_))
        ));
        assert!(matches!(
            event("{}", false),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn only_the_formats_whose_chunks_concatenate_stream() {
        for (format, streams) in [
            ("mp3", true),
            ("pcm", true),
            ("wav", false),
            ("flac", false),
            ("opus", false),
        ] {
            let r = T2aRequest::new("speech-2.8-hd", "hi", "v", 1.0, format, 24_000);
            assert_eq!(r.stream, streams, "{format}");
            assert_eq!(r.stream_options.is_some(), streams);
            let body = serde_json::to_value(&r).unwrap();
            assert!(body.get("GroupId").is_none() && body["voice_setting"]["pitch"] == 0);
        }
    }
}
