//! Audio in-process, since Lambda has no sox or ffmpeg: what the speech
//! routes need of codecs, and nothing of HTTP. Sans I/O and CPU-bound:
//! callers run it on a blocking thread, through [`off_thread`].
//!
//! - `decode.rs`: any accepted file (wav, mp3, m4a/AAC, ogg Vorbis or Opus,
//!   flac, webm Opus) → f32 samples, packet by packet, with symphonia
//!   (libopus for Opus). The container is found from the bytes, never from
//!   the file name.
//! - `mp3.rs`: samples → the mp3 the voice call takes (LAME).
//! - `pcm.rs`: the mp3 parts of a synthesis → 24 kHz 16-bit mono PCM (and
//!   the wav header around it), as OpenAI's `pcm` and `wav` are.
//!
//! Memory is bounded by what streams: decoding never holds more than a
//! packet's samples, so a transcoding costs its input and its output. The
//! output is bounded by a longest duration, checked while decoding.

pub(crate) mod decode;
mod mp3;
mod pcm;

pub(crate) use pcm::{mp3_to_pcm16, wav_header};

/// A container MiniMax's platform's recognizer takes as it is (protocol
/// section 5: wav, aiff, flac, m4a, mp3, aac, ogg/opus), found from the
/// bytes: its file extension and type. `None` for anything else (webm
/// above all), which is transcoded first.
pub(crate) fn platform_container(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    let at = |offset: usize, magic: &[u8]| bytes.get(offset..offset + magic.len()) == Some(magic);
    Some(if at(0, b"RIFF") && at(8, b"WAVE") {
        ("wav", "audio/wav")
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        ("aiff", "audio/aiff")
    } else if at(0, b"fLaC") {
        ("flac", "audio/flac")
    } else if at(4, b"ftyp") {
        ("m4a", "audio/mp4")
    } else if at(0, b"OggS") {
        ("ogg", "audio/ogg")
    } else if at(0, b"ID3") {
        ("mp3", "audio/mpeg")
    } else if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xF6 == 0xF0 {
        // ADTS: sync, then layer 00.
        ("aac", "audio/aac")
    } else if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0 {
        ("mp3", "audio/mpeg")
    } else {
        return None;
    })
}

/// Why audio could not be used: the caller's file (a 400 naming what was
/// found) or, for `Encoder`, ours.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum AudioError {
    /// Not a format we read (text, an image, an unknown container).
    #[error("{0}")]
    Unsupported(String),
    /// A format we read, but the bytes are broken or hold no sound.
    #[error("{0}")]
    Corrupt(String),
    /// Longer than the longest accepted.
    #[error("{0}")]
    TooLong(String),
    /// The encoder failed (not the caller's fault).
    #[error("{0}")]
    Encoder(String),
}

/// Run `work` (a decoding, an encoding) on tokio's blocking threads. A codec
/// that panics on the bytes it was given (where panics unwind: the
/// self-hosted server) has found them broken: that is `Corrupt`, and the
/// panic, a codec's bug, is logged, never quoted (tokio's `JoinError` would
/// quote it). On Lambda, where panics abort, the fuzzed fixtures of
/// `tests.rs` are what stand between a broken file and a crashed function.
pub(crate) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AudioError> + Send + 'static,
) -> Result<T, AudioError> {
    // The blocking thread logs as the caller would: in its span (on Lambda,
    // the runtime's, which carries the request id) and to its subscriber.
    let span = tracing::Span::current();
    let logs = tracing::dispatcher::get_default(Clone::clone);
    let work = move || tracing::dispatcher::with_default(&logs, || span.in_scope(work));
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a codec failed on its input");
        Err(AudioError::Corrupt(
            "the decoder failed on it: the file is likely damaged".into(),
        ))
    })
}

/// The caller's audio as the mp3 the voice call takes (protocol section 9:
/// 44.1 kHz, stereo, 192 kbit/s, as the reference service sent).
#[derive(Debug)]
pub(crate) struct Mp3 {
    pub bytes: Vec<u8>,
    /// The audio's duration, in seconds.
    pub seconds: f64,
    /// What the input was found to be (`ogg/opus`, `mp4/aac`, …), for logs.
    pub detected: String,
}

/// Decode any accepted audio and encode it as the voice call's mp3.
/// Refused past `max_seconds` of audio, found while decoding.
pub(crate) fn transcode_to_mp3(bytes: bytes::Bytes, max_seconds: u32) -> Result<Mp3, AudioError> {
    let mut encoder: Option<mp3::Encoder> = None;
    let mut frames = 0u64;
    let mut rate = 0u32;
    let detected = decode::decode(&decode::ANY, bytes, |samples, channels, sample_rate| {
        let encoder = match &mut encoder {
            Some(e) => e,
            None => {
                rate = sample_rate;
                encoder.insert(mp3::Encoder::new(sample_rate)?)
            }
        };
        if sample_rate != rate {
            return Err(AudioError::Corrupt(format!(
                "the sample rate changes mid-stream ({rate} Hz, then {sample_rate} Hz)"
            )));
        }
        frames += (samples.len() / channels) as u64;
        if frames > u64::from(max_seconds) * u64::from(rate) {
            return Err(AudioError::TooLong(format!(
                "The audio is longer than {max_seconds} s, the longest accepted."
            )));
        }
        encoder.push(samples, channels)
    })?;
    let Some(encoder) = encoder else {
        return Err(AudioError::Corrupt(format!(
            "the file is {detected} but holds no audio"
        )));
    };
    Ok(Mp3 {
        bytes: encoder.finish()?,
        seconds: frames as f64 / f64::from(rate),
        detected,
    })
}

#[cfg(test)]
pub(crate) mod tests;
