//! Speech on an account of the pool, with the same failover as chat
//! answers (`answer::on_an_account`): on MiniMax's paid platform whenever
//! the request has a platform key (T2A v2 synthesis, `asr-1.0`
//! recognition: `Platform`); else on Hailuo, synthesis as a repeat turn
//! read aloud and recognition as a voice call.
//!
//! The upstream's voice is a per-account setting, changed by one call and
//! used by the next (protocol section 8). A synthesis holds its account's
//! lease from the repeat turn to the end of the download, so within an
//! execution environment no other request (speech or chat) uses that
//! account in between; across Lambda instances nothing can serialize it,
//! which the README explains (several tokens, or reserved concurrency).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::answer::{on_an_account, Answer, Failed, Pool};
use crate::config::Config;
use crate::credentials::TokenSet;
use crate::error::ApiError;
use crate::pool::local::Lease;
use crate::upstream::api::speech::{AudioStream, T2aRequest, Transcribed, Transcript};
use crate::upstream::api::ApiClient;
use crate::upstream::{ChatTurn, Turn, Upstream, UpstreamError, UpstreamEvent, Voice};

/// OpenAI's six classic voices, in the order `REPLACE_AUDIO_MODEL` replaces them.
pub(crate) const OPENAI_VOICES: [&str; 6] = ["alloy", "echo", "fable", "onyx", "nova", "shimmer"];
/// Their Hailuo voices under `tts-1` (protocol section 8) ...
const TTS_1: [&str; 6] = [
    "male-botong",
    "Podcast_girl",
    "boyan_new_hailuo",
    "female-shaonv",
    "YaeMiko_hailuo",
    "xiaoyi_mix_hailuo",
];
/// ... and under `tts-1-hd`.
const TTS_1_HD: [&str; 6] = [
    "xiaomo_sft",
    "Leishen2_hailuo",
    "Zhongli_hailuo",
    "Paimeng_hailuo",
    "keli_hailuo",
    "Hutao_hailuo",
];

/// The Hailuo voice for an OpenAI `voice` under `model`: one of the six
/// OpenAI names maps through `REPLACE_AUDIO_MODEL` (in order) or the
/// model's table (`tts-1-hd`, or any model with `hd` in its name, takes
/// the HD table); any other string is a Hailuo voice id (or a cloned
/// `puv_…` voice) and passes through.
pub(crate) fn resolve_voice(model: &str, voice: &str, replace: &[String]) -> String {
    let Some(i) = OPENAI_VOICES
        .iter()
        .position(|v| v.eq_ignore_ascii_case(voice))
    else {
        return voice.to_string();
    };
    if let Some(replaced) = replace.get(i) {
        return replaced.clone();
    }
    let table = if model.to_ascii_lowercase().contains("hd") {
        &TTS_1_HD
    } else {
        &TTS_1
    };
    table[i].to_string()
}

/// OpenAI's voices on the platform (protocol section 4.5): the first six
/// are LiteLLM's map, so its users keep their voices.
const PLATFORM_VOICES: [(&str, &str); 11] = [
    ("alloy", "male-qn-qingse"),
    ("echo", "male-qn-jingying"),
    ("fable", "female-shaonv"),
    ("onyx", "male-qn-badao"),
    ("nova", "female-yujie"),
    ("shimmer", "female-tianmei"),
    ("ash", "Deep_Voice_Man"),
    ("coral", "English_Graceful_Lady"),
    ("sage", "Wise_Woman"),
    ("ballad", "English_expressive_narrator"),
    ("verse", "Friendly_Person"),
];

/// The platform voice for an OpenAI `voice`: `REPLACE_AUDIO_MODEL` for the
/// first six, then `MINIMAX_API_VOICE_MAP`, then the table; any other
/// string is a platform voice id (cloned ones included) and goes as it is.
pub(crate) fn platform_voice(voice: &str, config: &Config) -> String {
    let lower = voice.to_ascii_lowercase();
    if let Some(i) = OPENAI_VOICES.iter().position(|v| *v == lower) {
        if let Some(replaced) = config.replace_audio_model.get(i) {
            return replaced.clone();
        }
    }
    if let Some((_, to)) = config.api.voice_map.iter().find(|(from, _)| *from == lower) {
        return to.clone();
    }
    PLATFORM_VOICES
        .iter()
        .find(|(from, _)| *from == lower)
        .map_or_else(|| voice.to_string(), |(_, to)| to.to_string())
}

/// The platform's synthesis model for an OpenAI `model`: `tts-1` the turbo
/// one, `tts-1-hd` and `gpt-4o-mini-tts` the HD one; a `speech-…` name as
/// it is; anything else the turbo one.
pub(crate) fn platform_model<'a>(model: &'a str, config: &'a Config) -> &'a str {
    match model {
        "tts-1-hd" | "gpt-4o-mini-tts" => &config.api.tts_model_hd,
        m if m.starts_with("speech-") => m,
        _ => &config.api.tts_model,
    }
}

/// The platform's speech and recognition, on the request's platform keys.
pub(crate) struct Platform<'a> {
    pub client: &'a Arc<ApiClient>,
    pub config: &'a Config,
    pub set: &'a TokenSet,
    pub pool: Pool<'a>,
}

impl Platform<'_> {
    /// A synthesis, with its first bytes: every failure up to them moves
    /// to the next key as a chat would, or is the caller's error.
    pub(crate) async fn synthesize(
        self,
        request: &T2aRequest<'_>,
    ) -> Result<(Bytes, AudioStream, Lease), ApiError> {
        let upstream: Arc<dyn Upstream> = self.client.clone();
        let client = self.client;
        let set = self.set.of(upstream.id());
        let ((first, rest), lease) = on_an_account(
            &upstream,
            self.config,
            &set,
            self.pool,
            false,
            |key| async move {
                let failed = |error| Failed {
                    error,
                    accepted: false,
                };
                let mut audio = client.synthesize(&key, request).await.map_err(failed)?;
                match audio.next().await {
                    Some(Ok(first)) => Ok((first, audio)),
                    Some(Err(e)) => Err(failed(e)),
                    None => Err(failed(UpstreamError::Protocol(
                        "the platform's speech was empty".into(),
                    ))),
                }
            },
        )
        .await?;
        Ok((first, rest, lease))
    }

    /// A recognition of `file` on a key of the pool.
    pub(crate) async fn transcribe(self, file: Transcribed<'_>) -> Result<Transcript, ApiError> {
        let upstream: Arc<dyn Upstream> = self.client.clone();
        let client = self.client;
        let set = self.set.of(upstream.id());
        let file = &file;
        let (transcript, _lease) = on_an_account(
            &upstream,
            self.config,
            &set,
            self.pool,
            false,
            |key| async move {
                let again = Transcribed {
                    bytes: file.bytes.clone(),
                    ..*file
                };
                client
                    .transcribe(&key, again)
                    .await
                    .map_err(|error| Failed {
                        error,
                        accepted: false,
                    })
            },
        )
        .await?;
        Ok(transcript)
    }
}

/// The turn that makes the model repeat `text` verbatim (protocol section
/// 8, the reference prompt): newlines become `。`, brackets, `#` and angle
/// brackets become spaces (the model reads them as markup).
pub(crate) fn repeat_prompt(text: &str) -> String {
    let cleaned: String = text
        .replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\n' | '\r' => '。',
            '(' | ')' | '[' | ']' | '{' | '}' | '（' | '）' | '【' | '】' | '#' | '<' | '>' => {
                ' '
            }
            c => c,
        })
        .collect();
    format!(
        "user:完整复述以下内容，不要进行任何修改，也不需要进行任何解释。\n{cleaned}\nassistant:好的，我将开始完整复述：\n"
    )
}

/// A synthesis ready to download: its parts, and the repeat turn's answer
/// that holds the account and the conversation to delete.
pub(crate) struct Synthesis {
    voice: Arc<dyn Voice>,
    answer: Answer,
    pub parts: Vec<String>,
}

impl Synthesis {
    /// Repeat turn → voice → parts, on an account of the pool. Failures
    /// before the synthesis was asked for move to another account as a chat
    /// would; a synthesis that timed out is not asked again elsewhere (a 504).
    pub(crate) async fn open(
        upstream: Arc<dyn Upstream>,
        speech: Arc<dyn Voice>,
        config: &Config,
        set: &TokenSet,
        pool: Pool<'_>,
        text: &str,
        voice: &str,
    ) -> Result<Synthesis, ApiError> {
        let turn = ChatTurn {
            prompt: repeat_prompt(text),
            ..ChatTurn::default()
        };
        let turn = &turn;
        let (mut synthesis, lease) = on_an_account(&upstream, config, set, pool, false, |token| {
            let (upstream, speech) = (upstream.clone(), speech.clone());
            async move {
                let answer =
                    Answer::open_once(upstream.clone(), config, token, &Turn::Text(turn), false)
                        .await?;
                Self::speak(upstream, speech, answer, voice).await
            }
        })
        .await?;
        synthesis.answer.hold(lease);
        Ok(synthesis)
    }

    /// Read the repeat turn to its end, then have its message spoken.
    async fn speak(
        upstream: Arc<dyn Upstream>,
        speech: Arc<dyn Voice>,
        mut answer: Answer,
        voice: &str,
    ) -> Result<Synthesis, Failed> {
        let failed = |error, accepted| Failed { error, accepted };
        let mut repeated = 0usize;
        loop {
            match answer.next().await {
                None | Some(Ok(UpstreamEvent::End)) => break,
                Some(Ok(UpstreamEvent::Delta(d))) => repeated += d.chars().count(),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    answer.cleanup().await;
                    return Err(failed(e, false));
                }
            }
        }
        let Some(message_id) = answer.message_id().map(str::to_string) else {
            answer.cleanup().await;
            return Err(failed(
                UpstreamError::Protocol("the repeat turn named no message to speak".into()),
                false,
            ));
        };
        let token = answer.token().to_string();
        tracing::info!(
            token = %answer.token_fingerprint(),
            chat_id = answer.chat_id().unwrap_or_default(),
            repeated_chars = repeated,
            voice,
            "synthesizing"
        );
        match speech.synthesize(&token, &message_id, voice).await {
            Ok(parts) => Ok(Synthesis {
                voice: speech,
                answer,
                parts,
            }),
            Err(error) => {
                answer.cleanup().await;
                // A synthesis that never became ready was asked for: asking
                // another account would double the wait past the timeout.
                let accepted = matches!(error, UpstreamError::Timeout(_));
                let error = upstream.explain_failure(&token, error).await;
                Err(failed(error, accepted))
            }
        }
    }

    /// The download of part `index` (owning what it needs, so the synthesis
    /// itself is not borrowed across it).
    pub(crate) fn part(
        &self,
        index: usize,
    ) -> impl std::future::Future<Output = Result<bytes::Bytes, UpstreamError>> + Send + 'static
    {
        let (voice, url) = (self.voice.clone(), self.parts[index].clone());
        async move { voice.download_part(&url).await }
    }

    /// Delete the repeat turn's conversation and give the account back.
    pub(crate) async fn cleanup(&mut self) {
        self.answer.cleanup().await;
    }
}

/// The transcript of an mp3, on an account of the pool (a voice call is
/// one answer, like a chat: the account is held for it).
pub(crate) async fn transcribe(
    upstream: Arc<dyn Upstream>,
    voice: Arc<dyn Voice>,
    config: &Config,
    set: &TokenSet,
    pool: Pool<'_>,
    mp3: bytes::Bytes,
) -> Result<String, ApiError> {
    let mp3 = &mp3;
    let (upstream, voice) = (&upstream, &voice);
    let (text, lease) = on_an_account(upstream, config, set, pool, false, |token| async move {
        voice
            .transcribe(&token, mp3.clone())
            .await
            .map_err(|error| Failed {
                error,
                accepted: false,
            })
    })
    .await?;
    lease.release().await;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voices_resolve_per_model_and_replacement() {
        assert_eq!(resolve_voice("tts-1", "alloy", &[]), "male-botong");
        assert_eq!(resolve_voice("tts-1-hd", "alloy", &[]), "xiaomo_sft");
        assert_eq!(resolve_voice("tts-1", "Shimmer", &[]), "xiaoyi_mix_hailuo");
        assert_eq!(resolve_voice("tts-1-hd", "onyx", &[]), "Paimeng_hailuo");
        assert_eq!(
            resolve_voice("gpt-4o-mini-tts", "nova", &[]),
            "YaeMiko_hailuo"
        );
        let replace = vec!["JayChou_hailuo".to_string(), "puv_123".to_string()];
        assert_eq!(
            resolve_voice("tts-1-hd", "alloy", &replace),
            "JayChou_hailuo"
        );
        assert_eq!(resolve_voice("tts-1", "echo", &replace), "puv_123");
        assert_eq!(
            resolve_voice("tts-1", "fable", &replace),
            "boyan_new_hailuo"
        );
        assert_eq!(
            resolve_voice("tts-1", "Guodegang_hailuo", &replace),
            "Guodegang_hailuo"
        );
        assert_eq!(resolve_voice("tts-1", "puv_2025", &[]), "puv_2025");
    }

    #[test]
    fn the_repeat_prompt_cleans_markup() {
        let p = repeat_prompt("# Title\r\nLine (one) <b>two</b>\n【注】");
        assert_eq!(
            p,
            "user:完整复述以下内容，不要进行任何修改，也不需要进行任何解释。\n  Title。Line  one   b two /b 。 注 \nassistant:好的，我将开始完整复述：\n"
        );
    }
}
