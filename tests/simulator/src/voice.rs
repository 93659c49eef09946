//! Hailuo speech (protocol sections 8 and 9).
//!
//! Synthesis: `update_robot_custom_config` sets the account's voice;
//! `msg_tts` answers "not ready" for a few polls (`tts_polls_before_ready`),
//! then the URLs of real mp3 parts (tones, one per stretch of the message's
//! text, pitched by the voice) served under `/cdn/tts/`. A poll whose
//! `timbre` is not the account's voice at that moment is a violation: that
//! is what two syntheses racing on one account look like.
//!
//! Recognition: `phone_msg` checks the multipart form and its signature,
//! walks the MP3 frame headers of what it received (every frame must
//! follow the last; ID3 tags allowed), decodes it to tell silence
//! (status 1200041) from speech, records the duration, rate and channels,
//! starts a conversation and answers the transcript (a queued reply, or
//! one naming the duration) as the first `asr_chunk` event.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

use crate::checks::{fingerprint, md5_hex};
use crate::hailuo::{verify_form, verify_json};
use crate::state::{Conversation, FaultKind, Turn};
use crate::{body_text, envelope, failure, Shared, CODE_TOKEN_EXPIRED, EXPIRED};

/// No speech was recognized in the audio.
pub const CODE_NO_SPEECH: i64 = 1_200_041;
const CODE_NOT_FOUND: i64 = 1_000_404;
const ORIGIN: &str = "https://hailuoai.com";
/// The parts' sample rate: not OpenAI's 24 kHz, so the gateway resamples.
const PART_RATE: u32 = 32_000;

#[derive(Default)]
pub struct Voice {
    /// token → the voice its account is set to.
    pub voices: HashMap<String, String>,
    /// message id → its synthesis, once asked for.
    jobs: HashMap<String, Job>,
    pub syntheses: Vec<Synthesis>,
    pub transcriptions: Vec<Transcription>,
}

struct Job {
    polls: u32,
    never_ready: bool,
    /// The first part whose URL answers 404 (`tts_part_missing`).
    missing_from: Option<usize>,
    parts: Vec<Bytes>,
    recorded: bool,
}

/// A synthesis as a test sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Synthesis {
    pub msg_id: String,
    pub chat_id: String,
    pub token_fp: String,
    pub voice: String,
    pub text: String,
    /// The parts' URLs, in order.
    pub parts: Vec<String>,
    /// The audio's length (the samples encoded, before mp3 padding).
    pub seconds: f64,
    pub polls: u32,
}

/// A voice call as a test sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Transcription {
    pub token_fp: String,
    pub chat_id: String,
    pub bytes: usize,
    pub frames: u32,
    /// From the frame headers.
    pub seconds: f64,
    pub sample_rate: u32,
    pub channels: u8,
    pub bitrate_kbps: u32,
    pub silent: bool,
    pub transcript: String,
}

pub async fn set_voice(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/v1/api/chat/update_robot_custom_config";
    let token = match verify_json(&st, &method, path, &headers, q.as_deref(), &body) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut s = st.lock().unwrap();
    if s.expired.contains(&token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    let parsed: Value = serde_json::from_str(&body_text(&body)).unwrap_or_default();
    let voice = parsed
        .pointer("/config/robotVoiceID")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if parsed["robotID"] != "1" || voice.is_empty() {
        s.violation(
            "POST",
            path,
            &token,
            "body must be {\"robotID\":\"1\",\"config\":{\"robotVoiceID\":…}}",
        );
        return failure(crate::CODE_SIGNATURE, "参数错误");
    }
    s.voice.voices.insert(token, voice);
    envelope(0, "成功", json!({}))
}

/// The query's own parameters, before the device query.
fn own_params(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .take_while(|p| !p.starts_with("device_platform="))
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            (k.to_string(), v)
        })
        .collect()
}

pub async fn msg_tts(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/v1/api/chat/msg_tts";
    let token = match verify_json(&st, &method, path, &headers, q.as_deref(), &body) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let params = own_params(q.as_deref().unwrap_or(""));
    let (msg_id, timbre) = (
        params.get("msgID").cloned().unwrap_or_default(),
        params.get("timbre").cloned().unwrap_or_default(),
    );
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let mut guard = st.lock().unwrap();
    let s = &mut *guard;
    if s.expired.contains(&token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    let set = s.voice.voices.get(&token).cloned().unwrap_or_default();
    if timbre.is_empty() || timbre != set {
        s.violation(
            "GET",
            path,
            &token,
            format!("msg_tts timbre {timbre:?} is not the account's voice {set:?} (set it with update_robot_custom_config first)"),
        );
    }
    let Some(chat_id) = s.messages.get(&msg_id).cloned() else {
        return failure(CODE_NOT_FOUND, "消息不存在");
    };
    let text = match s.conversation_mut(&chat_id) {
        Some(c) if c.token == token && !c.deleted && c.completed => {
            c.turns.last().map(|t| t.answer.clone()).unwrap_or_default()
        }
        _ => return failure(CODE_NOT_FOUND, "消息不存在"),
    };
    let fresh = !s.voice.jobs.contains_key(&msg_id);
    let never_ready = fresh && s.take_fault_of(&token, FaultKind::TtsNeverReady).is_some();
    let missing_from = fresh
        .then(|| s.take_fault_of(&token, FaultKind::TtsPartMissing))
        .flatten()
        .map(|f| f.after_events as usize);
    let before_ready = s.settings.tts_polls_before_ready;
    let job = s.voice.jobs.entry(msg_id.clone()).or_insert_with(|| Job {
        polls: 0,
        never_ready,
        missing_from,
        parts: Vec::new(),
        recorded: false,
    });
    job.polls += 1;
    if job.never_ready || job.polls <= before_ready {
        return envelope(0, "成功", json!({"requestStatus": 1, "result": []}));
    }
    let urls: Vec<String> = (0..text_pieces(&text).len())
        .map(|i| format!("http://{host}/cdn/tts/{msg_id}/{i}.mp3"))
        .collect();
    if !job.recorded {
        job.recorded = true;
        let mut seconds = 0.0;
        for piece in text_pieces(&text) {
            let (mp3, length) = tone_part(&piece, &set);
            seconds += length;
            job.parts.push(mp3);
        }
        let polls = job.polls;
        s.voice.syntheses.push(Synthesis {
            msg_id: msg_id.clone(),
            chat_id,
            token_fp: fingerprint(&token),
            voice: set,
            text,
            parts: urls.clone(),
            seconds,
            polls,
        });
    }
    envelope(0, "成功", json!({"requestStatus": 2, "result": urls}))
}

/// The text a part speaks: at most 30 characters each.
fn text_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(30).map(|c| c.iter().collect()).collect()
}

/// A part: a tone as long as its text takes to say (60 ms a character,
/// at least 0.2 s), pitched by the voice. Returns the mp3 and its length.
fn tone_part(piece: &str, voice: &str) -> (Bytes, f64) {
    use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, MonoPcm, Quality};
    let seconds = (piece.chars().count() as f64 * 0.06).max(0.2);
    let frames = (seconds * f64::from(PART_RATE)) as usize;
    let pitch = 200.0 + (md5_hex(voice).as_bytes()[0] as f32 % 40.0) * 10.0;
    let samples: Vec<i16> = (0..frames)
        .map(|i| {
            let t = i as f32 / PART_RATE as f32;
            ((t * pitch * std::f32::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    let mut builder = Builder::new().expect("LAME");
    builder.set_num_channels(1).expect("mono");
    builder.set_sample_rate(PART_RATE).expect("rate");
    builder.set_brate(Bitrate::Kbps64).expect("bitrate");
    builder.set_quality(Quality::Good).expect("quality");
    let mut lame = builder.build().expect("LAME");
    let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(frames) + 7200);
    lame.encode_to_vec(MonoPcm(&samples), &mut out)
        .expect("encode");
    lame.flush_to_vec::<FlushNoGap>(&mut out).expect("flush");
    (out.into(), frames as f64 / f64::from(PART_RATE))
}

/// A part from the "CDN": the browser's Referer, and never a token.
pub async fn part(
    AxState(st): AxState<Shared>,
    headers: HeaderMap,
    Path((msg_id, file)): Path<(String, String)>,
) -> Response {
    let path = format!("/cdn/tts/{msg_id}/{file}");
    let mut s = st.lock().unwrap();
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if !header("token").is_empty() {
        s.violation("GET", &path, "", "a token was sent to the CDN");
    }
    if header("referer") != format!("{ORIGIN}/") {
        s.violation(
            "GET",
            &path,
            "",
            format!("part `Referer` is {:?}", header("referer")),
        );
        return (StatusCode::FORBIDDEN, "Forbidden").into_response();
    }
    let index: Option<usize> = file.strip_suffix(".mp3").and_then(|i| i.parse().ok());
    match (s.voice.jobs.get(&msg_id), index) {
        (Some(job), Some(i)) if i < job.parts.len() && job.missing_from.is_none_or(|m| i < m) => {
            Response::builder()
                .header("content-type", "audio/mpeg")
                .body(Body::from(job.parts[i].clone()))
                .unwrap()
        }
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// What the frame headers of an MP3 say.
#[derive(Debug, PartialEq)]
pub struct Mp3Info {
    pub frames: u32,
    pub seconds: f64,
    pub sample_rate: u32,
    pub channels: u8,
    pub bitrate_kbps: u32,
    /// Where each frame starts.
    pub offsets: Vec<usize>,
}

/// Walk an MP3's frames: an optional ID3v2 tag, then MPEG audio layer III
/// frames one after another to the end (an ID3v1 tag may close it).
pub fn walk_mp3(bytes: &[u8]) -> Result<Mp3Info, String> {
    const MPEG1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const MPEG2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let mut i = 0usize;
    if bytes.len() >= 10 && &bytes[..3] == b"ID3" {
        let size = bytes[6..10]
            .iter()
            .fold(0usize, |a, b| (a << 7) | usize::from(b & 0x7f));
        let footer = if bytes[5] & 0x10 != 0 { 10 } else { 0 };
        i = 10 + size + footer;
    }
    let (mut frames, mut samples) = (0u32, 0u64);
    let mut offsets = Vec::new();
    let mut first: Option<(u32, u8, u32)> = None;
    while i < bytes.len() {
        if bytes.len() - i == 128 && &bytes[i..i + 3] == b"TAG" {
            break;
        }
        if i + 4 > bytes.len() {
            return Err(format!(
                "{} stray bytes after the last frame",
                bytes.len() - i
            ));
        }
        let h = u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if h >> 21 != 0x7ff {
            return Err(format!(
                "no MPEG frame sync at byte {i} (frame {})",
                frames + 1
            ));
        }
        let version = (h >> 19) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        let layer = (h >> 17) & 3; // 1: layer III
        let bitrate_index = ((h >> 12) & 0xf) as usize;
        let rate_index = ((h >> 10) & 3) as usize;
        if version == 1
            || layer != 1
            || bitrate_index == 0
            || bitrate_index == 15
            || rate_index == 3
        {
            return Err(format!(
                "frame {} at byte {i} is not an MPEG layer III frame",
                frames + 1
            ));
        }
        let base_rate = [44_100, 48_000, 32_000][rate_index];
        let (rate, kbps, per_frame, coefficient) = match version {
            3 => (base_rate, MPEG1[bitrate_index], 1152, 144),
            2 => (base_rate / 2, MPEG2[bitrate_index], 576, 72),
            _ => (base_rate / 4, MPEG2[bitrate_index], 576, 72),
        };
        let channels = if (h >> 6) & 3 == 3 { 1 } else { 2 };
        let padding = ((h >> 9) & 1) as usize;
        let length = (coefficient * kbps * 1000 / rate) as usize + padding;
        if i + length > bytes.len() {
            return Err(format!("frame {} is cut short", frames + 1));
        }
        match first {
            None => first = Some((rate, channels, kbps)),
            Some((r, c, _)) if r != rate || c != channels => {
                return Err(format!("frame {} changes rate or channels", frames + 1))
            }
            _ => {}
        }
        frames += 1;
        samples += per_frame;
        offsets.push(i);
        i += length;
    }
    let (sample_rate, channels, bitrate_kbps) = first.ok_or("no MPEG audio frame")?;
    Ok(Mp3Info {
        frames,
        seconds: samples as f64 / f64::from(sample_rate),
        sample_rate,
        channels,
        bitrate_kbps,
        offsets,
    })
}

/// The loudness of an mp3 (RMS of its decoded samples, full scale 1.0).
fn loudness(mp3: &Bytes) -> f64 {
    use symphonia::core::formats::TrackType;
    use symphonia::core::io::MediaSourceStream;
    let source = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(mp3.clone())),
        Default::default(),
    );
    let mut hint = symphonia::core::formats::probe::Hint::new();
    hint.with_extension("mp3");
    let Ok(mut format) = symphonia::default::get_probe().probe(
        &hint,
        source,
        Default::default(),
        Default::default(),
    ) else {
        return 0.0;
    };
    let Some(params) = format
        .default_track(TrackType::Audio)
        .and_then(|t| t.codec_params.as_ref()?.audio().cloned())
    else {
        return 0.0;
    };
    let Ok(mut decoder) =
        symphonia::default::get_codecs().make_audio_decoder(&params, &Default::default())
    else {
        return 0.0;
    };
    let (mut sum, mut n) = (0.0f64, 0u64);
    let mut samples: Vec<f32> = Vec::new();
    while let Ok(Some(packet)) = format.next_packet() {
        if let Ok(decoded) = decoder.decode(&packet) {
            decoded.copy_to_vec_interleaved(&mut samples);
            for s in &samples {
                sum += f64::from(*s) * f64::from(*s);
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64).sqrt()
    }
}

fn voice_event(event: &str, code: i64, message: &str, data: Value) -> String {
    let body = json!({"status_code": code, "err_message": message, "data": data});
    format!("event: {event}\ndata: {body}\n\n")
}

pub async fn phone_msg(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    mut form: Multipart,
) -> Response {
    let path = "/v1/api/chat/phone_msg";
    let (mut fields, mut audio) = (Vec::new(), None);
    let mut problems = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                if name == "voiceBytes" {
                    if field.file_name() != Some("audio.mp3") {
                        problems.push(format!(
                            "voiceBytes file name is {:?}, expected audio.mp3",
                            field.file_name()
                        ));
                    }
                    if field.content_type() != Some("audio/mp3") {
                        problems.push(format!(
                            "voiceBytes type is {:?}, expected audio/mp3",
                            field.content_type()
                        ));
                    }
                    fields.push((name, String::new()));
                    audio = field.bytes().await.ok();
                } else {
                    let value = field.text().await.unwrap_or_default();
                    fields.push((name, value));
                }
            }
            Ok(None) => break,
            Err(e) => {
                st.lock().unwrap().violation(
                    "POST",
                    path,
                    "",
                    format!("unreadable multipart body: {e}"),
                );
                return failure(crate::CODE_SIGNATURE, "参数错误");
            }
        }
    }
    let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let audio = audio.unwrap_or_default();
    let data = format!(
        "{}{}{}",
        md5_hex(field("characterID").unwrap_or_default()),
        md5_hex(field("chatID").unwrap_or_default()),
        md5_hex(&audio[..audio.len().min(1024)])
    );
    let token = match verify_form(&st, &method, path, &headers, q.as_deref(), data) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let order: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    if order != ["chatID", "voiceBytes", "characterID", "playSpeedLevel"] {
        problems.push(format!(
            "form fields are {order:?}, expected chatID, voiceBytes, characterID, playSpeedLevel"
        ));
    }
    if field("chatID").as_deref() != Some("0")
        || field("characterID").as_deref() != Some("1")
        || field("playSpeedLevel").as_deref() != Some("1")
    {
        problems.push("form needs chatID=0, characterID=1, playSpeedLevel=1".into());
    }
    let info = walk_mp3(&audio);
    if let Err(why) = &info {
        problems.push(format!("voiceBytes is not an MP3: {why}"));
    }
    let mut s = st.lock().unwrap();
    if !problems.is_empty() {
        for p in problems {
            s.violation("POST", path, &token, p);
        }
        return failure(crate::CODE_SIGNATURE, "参数错误");
    }
    if s.expired.contains(&token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    let info = info.expect("checked");
    let silent = loudness(&audio) < 0.002;
    let transcript = if silent {
        String::new()
    } else {
        s.replies.pop_front().unwrap_or_else(|| {
            format!(
                "Simulated transcript of {:.1} seconds of speech.",
                info.seconds
            )
        })
    };
    let chat_id = s.new_id();
    let mut conversation = Conversation::new(&chat_id, &token);
    conversation.completed = true;
    conversation.turns.push(Turn {
        prompt: "[voice]".into(),
        answer: transcript.clone(),
        thinking: String::new(),
        files: vec![],
    });
    s.add_conversation(conversation);
    s.voice.transcriptions.push(Transcription {
        token_fp: fingerprint(&token),
        chat_id: chat_id.clone(),
        bytes: audio.len(),
        frames: info.frames,
        seconds: info.seconds,
        sample_rate: info.sample_rate,
        channels: info.channels,
        bitrate_kbps: info.bitrate_kbps,
        silent,
        transcript: transcript.clone(),
    });
    let mut body = voice_event("message", 0, "", json!({"chatID": chat_id}));
    body.push_str(&if silent {
        voice_event("asr_chunk", CODE_NO_SPEECH, "未识别到语音", json!({}))
    } else {
        voice_event(
            "asr_chunk",
            0,
            "",
            json!({"chatID": chat_id, "text": transcript}),
        )
    });
    // The spoken reply the web app would play (the gateway stops before it).
    for i in 0..3 {
        body.push_str(&voice_event(
            "audio_chunk",
            0,
            "",
            json!({"index": i, "audio": "fff3"}),
        ));
    }
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::from(body))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mp3_frames_are_walked() {
        let (mp3, seconds) = tone_part("十个字的一段话十个字的", "male-botong");
        let info = walk_mp3(&mp3).unwrap();
        assert_eq!(
            (info.sample_rate, info.channels, info.bitrate_kbps),
            (32_000, 1, 64)
        );
        // LAME's Info frame and padding add a few frames.
        assert!(
            info.seconds >= seconds && info.seconds < seconds + 0.2,
            "{info:?}"
        );
        assert!(walk_mp3(b"not an mp3 at all").is_err());
        assert!(walk_mp3(&mp3[..mp3.len() - 10])
            .unwrap_err()
            .contains("cut short"));
        let mut tagged = b"ID3\x04\x00\x00\x00\x00\x00\x05hello".to_vec();
        tagged.extend_from_slice(&mp3);
        assert_eq!(walk_mp3(&tagged).unwrap().frames, info.frames);
        assert!(loudness(&mp3) > 0.1);
    }
}
