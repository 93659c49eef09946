//! `POST /v1/audio/speech` (JSON) and `POST /v1/audio/transcriptions`
//! (multipart) requests, validated field by field so every mistake gets a
//! 400 that names the field.

use serde_json::Value;

use crate::error::ApiError;

/// OpenAI's limit on `input`, in characters: what the Hailuo path speaks.
pub(crate) const MAX_INPUT_CHARS: usize = 4096;
/// The most `input` any path takes: the paid platform's (under 10,000).
pub(crate) const MAX_PLATFORM_INPUT_CHARS: usize = crate::upstream::api::speech::MAX_TEXT_CHARS;

/// What speech comes back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpeechFormat {
    /// The upstream's own parts, passed through.
    Mp3,
    /// 24 kHz 16-bit mono PCM in a RIFF header (sent whole: the header
    /// carries the length).
    Wav,
    /// 24 kHz 16-bit mono little-endian samples, no header.
    Pcm,
    /// The paid platform's only: FLAC and Opus as it makes them.
    Flac,
    Opus,
    /// Asked for by OpenAI's clients; no path makes it (a 400 that says so).
    Aac,
}

impl SpeechFormat {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            SpeechFormat::Mp3 => "audio/mpeg",
            SpeechFormat::Wav => "audio/wav",
            SpeechFormat::Pcm => "audio/pcm",
            SpeechFormat::Flac => "audio/flac",
            SpeechFormat::Opus => "audio/opus",
            SpeechFormat::Aac => "audio/aac",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SpeechFormat::Mp3 => "mp3",
            SpeechFormat::Wav => "wav",
            SpeechFormat::Pcm => "pcm",
            SpeechFormat::Flac => "flac",
            SpeechFormat::Opus => "opus",
            SpeechFormat::Aac => "aac",
        }
    }
}

#[derive(Debug)]
pub(crate) struct SpeechRequest {
    pub model: String,
    pub input: String,
    pub voice: String,
    pub format: SpeechFormat,
    /// OpenAI's range (0.25 to 4.0); the platform applies 0.5 to 2, the
    /// Hailuo voices speak at their own pace.
    pub speed: f64,
}

fn field_error(param: &str, message: String) -> ApiError {
    ApiError::invalid(param, message)
}

impl SpeechRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(&super::body::normalized(body)).map_err(|e| {
            ApiError::bad_body(format!(
                "The request body is not valid JSON ({e}). Send a JSON object with `model`, `input` and `voice`."
            ))
        })?;
        let Some(object) = value.as_object() else {
            return Err(ApiError::bad_body(
                "The request body must be a JSON object.",
            ));
        };
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(field_error(name, format!("`{name}` must be a string."))),
            }
        };
        let model = text("model")?.ok_or_else(|| ApiError::missing("model"))?;
        let input = text("input")?.ok_or_else(|| ApiError::missing("input"))?;
        if input.trim().is_empty() {
            return Err(field_error(
                "input",
                "`input` is empty: send the text to speak.".into(),
            ));
        }
        let chars = input.chars().count();
        if chars > MAX_PLATFORM_INPUT_CHARS {
            return Err(field_error(
                "input",
                format!(
                    "`input` is {chars} characters long; at most {MAX_PLATFORM_INPUT_CHARS} are spoken per request (MiniMax's platform's limit). Split the text."
                ),
            ));
        }
        // A voice is a name, or (newer SDKs, custom voices) an object with an id.
        let voice = match object.get("voice") {
            None | Some(Value::Null) => return Err(ApiError::missing("voice")),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => match o.get("id") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    return Err(field_error(
                        "voice",
                        "`voice` as an object needs a string `id`.".into(),
                    ))
                }
            },
            Some(_) => return Err(field_error("voice", "`voice` must be a string.".into())),
        };
        // Any voice id goes upstream byte for byte (the platform's have
        // spaces, brackets, full-width characters); only what no id holds
        // is refused here.
        if voice.trim().is_empty() || voice.len() > 256 || voice.chars().any(char::is_control) {
            return Err(field_error(
                "voice",
                format!(
                    "`voice` {:?} is not a voice: use alloy, ash, ballad, coral, echo, fable, onyx, nova, sage, shimmer or verse, or an upstream voice id.",
                    crate::text::clip(&voice, 70)
                ),
            ));
        }
        let format = match text("response_format")?.as_deref() {
            None | Some("mp3") => SpeechFormat::Mp3,
            Some("wav") => SpeechFormat::Wav,
            Some("pcm") => SpeechFormat::Pcm,
            Some("flac") => SpeechFormat::Flac,
            Some("opus") => SpeechFormat::Opus,
            Some("aac") => SpeechFormat::Aac,
            Some(other) => {
                return Err(field_error(
                    "response_format",
                    format!(
                        "`response_format` {:?} is not a speech format: use mp3, opus, aac, flac, wav or pcm.",
                        crate::text::clip(other, 40)
                    ),
                ))
            }
        };
        let speed = match object.get("speed") {
            None | Some(Value::Null) => 1.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| field_error("speed", "`speed` must be a number.".into()))?,
        };
        if !(0.25..=4.0).contains(&speed) {
            return Err(field_error(
                "speed",
                format!("`speed` is {speed}; it must be between 0.25 and 4.0."),
            ));
        }
        match text("stream_format")?.as_deref() {
            None | Some("audio") => {}
            Some(other) => {
                return Err(field_error(
                    "stream_format",
                    format!(
                        "`stream_format` {:?} is not supported: the audio is streamed as raw bytes (`audio`).",
                        crate::text::clip(other, 40)
                    ),
                ))
            }
        }
        // `instructions` (tone directions for gpt-4o-mini-tts) is accepted
        // and not applied: the upstream's voices take none.
        text("instructions")?;
        Ok(Self {
            model,
            input,
            voice,
            format,
            speed,
        })
    }
}

/// How a transcript comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TranscriptFormat {
    Json,
    Text,
    /// With timestamps: the paid platform's recognizer only.
    VerboseJson,
    Srt,
    Vtt,
}

impl TranscriptFormat {
    /// Whether it needs timestamps (the Hailuo voice call gives none).
    pub(crate) fn timed(self) -> bool {
        matches!(self, Self::VerboseJson | Self::Srt | Self::Vtt)
    }
}

/// The form fields of a transcription, besides the file.
#[derive(Debug)]
pub(crate) struct TranscriptionFields {
    pub model: String,
    pub format: TranscriptFormat,
    /// The spoken language (ISO 639-1, as OpenAI's), when the caller says.
    pub language: Option<String>,
}

impl TranscriptionFields {
    /// From the text fields as sent (name, value), in order.
    pub(crate) fn parse(fields: &[(String, String)]) -> Result<Self, ApiError> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim())
        };
        let format = match get("response_format") {
            None | Some("") | Some("json") => TranscriptFormat::Json,
            Some("text") => TranscriptFormat::Text,
            Some("verbose_json") => TranscriptFormat::VerboseJson,
            Some("srt") => TranscriptFormat::Srt,
            Some("vtt") => TranscriptFormat::Vtt,
            Some("diarized_json") => {
                return Err(field_error(
                    "response_format",
                    "`response_format` diarized_json is not supported: use json, text, verbose_json, srt or vtt.".into(),
                ))
            }
            Some(other) => {
                return Err(field_error(
                    "response_format",
                    format!(
                        "`response_format` {:?} is not a transcript format: use json, text, verbose_json, srt or vtt.",
                        crate::text::clip(other, 40)
                    ),
                ))
            }
        };
        if let Some(t) = get("temperature").filter(|t| !t.is_empty()) {
            match t.parse::<f64>() {
                Ok(t) if (0.0..=1.0).contains(&t) => {}
                _ => {
                    return Err(field_error(
                        "temperature",
                        format!(
                            "`temperature` {:?} must be a number between 0 and 1.",
                            crate::text::clip(t, 40)
                        ),
                    ))
                }
            }
        }
        if get("stream").is_some_and(|s| s.eq_ignore_ascii_case("true")) {
            return Err(field_error(
                "stream",
                "Streamed transcription is not supported here: leave `stream` out and the whole transcript comes back at once.".into(),
            ));
        }
        // `prompt` is accepted and not applied: no recognizer takes one.
        let language = get("language").filter(|l| !l.is_empty());
        if let Some(l) = language {
            if l.len() > 16 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(field_error(
                    "language",
                    format!(
                        "`language` {:?} is not a language code (ISO 639-1, such as en or zh).",
                        crate::text::clip(l, 20)
                    ),
                ));
            }
        }
        Ok(Self {
            model: get("model").unwrap_or("whisper-1").to_string(),
            format,
            language: language.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speech(body: &str) -> Result<SpeechRequest, ApiError> {
        SpeechRequest::parse(body.as_bytes())
    }

    fn param(e: ApiError) -> String {
        e.body()["error"]["param"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn half_an_emoji_in_speech_input_is_a_replacement_character() {
        let r = speech(r#"{"model":"tts-1","input":"hi \ud83d","voice":"alloy"}"#).unwrap();
        assert_eq!(r.input, "hi \u{FFFD}");
    }

    #[test]
    fn speech_requests() {
        let r = speech(r#"{"model":"tts-1","input":"你好","voice":"alloy"}"#).unwrap();
        assert_eq!(
            (r.format, r.speed, r.voice.as_str()),
            (SpeechFormat::Mp3, 1.0, "alloy")
        );
        let r = speech(r#"{"model":"tts-1","input":"x","voice":{"id":"puv_1"},"response_format":"pcm","speed":2}"#).unwrap();
        assert_eq!((r.format, r.voice.as_str()), (SpeechFormat::Pcm, "puv_1"));
        for (body, field) in [
            (r#"{"input":"x","voice":"alloy"}"#, "model"),
            (r#"{"model":"tts-1","voice":"alloy"}"#, "input"),
            (r#"{"model":"tts-1","input":"  ","voice":"alloy"}"#, "input"),
            (r#"{"model":"tts-1","input":"x"}"#, "voice"),
            (r#"{"model":"tts-1","input":"x","voice":"a\nb"}"#, "voice"),
            (
                r#"{"model":"tts-1","input":"x","voice":"alloy","response_format":"ogg"}"#,
                "response_format",
            ),
            (
                r#"{"model":"tts-1","input":"x","voice":"alloy","speed":5}"#,
                "speed",
            ),
            (
                r#"{"model":"tts-1","input":"x","voice":"alloy","speed":"fast"}"#,
                "speed",
            ),
            (
                r#"{"model":"tts-1","input":"x","voice":"alloy","stream_format":"sse"}"#,
                "stream_format",
            ),
            (r#"{"model":1,"input":"x","voice":"alloy"}"#, "model"),
        ] {
            assert_eq!(param(speech(body).unwrap_err()), field, "{body}");
        }
        let long = format!(
            r#"{{"model":"tts-1","input":"{}","voice":"alloy"}}"#,
            "字".repeat(10_000)
        );
        let e = speech(&long).unwrap_err();
        assert!(e.to_string().contains("10000 characters"), "{e}");
        // The platform's voice ids, byte for byte.
        let r = speech(r#"{"model":"tts-1","input":"x","voice":"Cantonese_ProfessionalHost（F)","response_format":"opus"}"#).unwrap();
        assert_eq!(
            (r.voice.as_str(), r.format),
            ("Cantonese_ProfessionalHost（F)", SpeechFormat::Opus)
        );
        assert!(speech("not json")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert!(speech("[1]")
            .unwrap_err()
            .to_string()
            .contains("JSON object"));
    }

    #[test]
    fn transcription_fields() {
        let f = |pairs: &[(&str, &str)]| {
            TranscriptionFields::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        let ok = f(&[
            ("model", "whisper-1"),
            ("language", "zh"),
            ("temperature", "0.2"),
        ])
        .unwrap();
        assert_eq!(ok.format, TranscriptFormat::Json);
        assert_eq!(
            f(&[("response_format", "text")]).unwrap().format,
            TranscriptFormat::Text
        );
        assert_eq!(ok.language.as_deref(), Some("zh"));
        assert_eq!(
            f(&[("response_format", "vtt")]).unwrap().format,
            TranscriptFormat::Vtt
        );
        for (pairs, field) in [
            (
                &[("response_format", "diarized_json")][..],
                "response_format",
            ),
            (&[("language", "en us")][..], "language"),
            (&[("response_format", "xml")][..], "response_format"),
            (&[("temperature", "hot")][..], "temperature"),
            (&[("stream", "true")][..], "stream"),
        ] {
            assert_eq!(param(f(pairs).unwrap_err()), field, "{pairs:?}");
        }
    }
}
