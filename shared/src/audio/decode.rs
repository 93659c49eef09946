//! An audio file → f32 samples, one packet at a time.
//!
//! symphonia finds the container from the bytes (its probe reads the magic
//! numbers; no hint from the file name is given, so a text file named
//! `.mp3` is found out) and decodes every accepted codec but Opus, which
//! libopus decodes through `symphonia-adapter-libopus`. Broken packets in an
//! otherwise good file are skipped, as players do; a file where most
//! packets are broken is corrupt.
//!
//! What a decoding accepts is a `Formats` value, built once: every format
//! for a caller's file (`ANY`), mp3 alone for the parts of a synthesis
//! (`MP3`). The registries are built in code, not taken from symphonia's
//! defaults, so the speech function, which only ever reads mp3, links no
//! other demuxer or decoder (and no libopus): about half a megabyte of its
//! bootstrap.

use std::io::Cursor;
use std::sync::LazyLock;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::{Hint, Probe};
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::default::{codecs, formats};

use super::AudioError;

/// The containers and codecs a decoding accepts, and their names for messages.
pub(crate) struct Formats {
    probe: Probe,
    codecs: CodecRegistry,
    accepted: &'static str,
}

impl Formats {
    fn new(accepted: &'static str) -> Self {
        let mut probe = Probe::default();
        // ID3v2 tags ahead of the audio (mp3 files carry them).
        probe.register_metadata::<symphonia_metadata::id3v2::Id3v2Reader<'_>>();
        Formats {
            probe,
            codecs: CodecRegistry::new(),
            accepted,
        }
    }
}

/// Every file the transcription route accepts.
pub(crate) static ANY: LazyLock<Formats> = LazyLock::new(|| {
    let mut f = Formats::new("wav, mp3, m4a (AAC), ogg (Vorbis or Opus), flac, webm (Opus)");
    // symphonia's own order (`register_enabled_formats`): the probe tries
    // markers in it, and ADTS and MPEG audio both start with a sync word.
    f.probe.register_format::<formats::AdtsReader<'_>>();
    f.probe.register_format::<formats::FlacReader<'_>>();
    f.probe.register_format::<formats::IsoMp4Reader<'_>>();
    f.probe.register_format::<formats::MpaReader<'_>>();
    f.probe.register_format::<formats::WavReader<'_>>();
    f.probe.register_format::<formats::OggReader<'_>>();
    f.probe.register_format::<formats::MkvReader<'_>>();
    f.codecs.register_audio_decoder::<codecs::AacDecoder>();
    f.codecs.register_audio_decoder::<codecs::FlacDecoder>();
    f.codecs.register_audio_decoder::<codecs::MpaDecoder>();
    f.codecs.register_audio_decoder::<codecs::PcmDecoder>();
    f.codecs.register_audio_decoder::<codecs::VorbisDecoder>();
    f.codecs
        .register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
    f
});

/// The mp3 parts of a synthesis.
pub(crate) static MP3: LazyLock<Formats> = LazyLock::new(|| {
    let mut f = Formats::new("mp3");
    f.probe.register_format::<formats::MpaReader<'_>>();
    f.codecs.register_audio_decoder::<codecs::MpaDecoder>();
    f
});

/// The sample rates of real recordings, telephony's 8 kHz and below up to
/// studio masters' 384 kHz. A broken header can say anything (0 Hz was
/// found by the broken-file test), and what the samples go to next (LAME,
/// the resampler) refuses what it cannot resample, which must not read as
/// the encoder's failure (a 500).
const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=384_000;

/// Names what the bytes are, for messages: a MIME type from the magic
/// numbers, "text" for UTF-8 without any, else "unrecognized data".
fn detect(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file".into();
    }
    if let Some(kind) = infer::get(bytes) {
        return kind.mime_type().to_string();
    }
    let head = &bytes[..bytes.len().min(512)];
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A character cut at the 512th byte is still text.
        Err(e) => e.error_len().is_none() && e.valid_up_to() > 0,
    };
    if text { "text" } else { "unrecognized data" }.into()
}

/// Decode `bytes`, one of `formats`, handing each packet's samples
/// (interleaved, with their channel count and rate) to `sink`. Returns what
/// the file was found to be (`audio/ogg (opus)`). The sink's errors stop
/// decoding and are returned.
pub(crate) fn decode(
    formats: &Formats,
    bytes: bytes::Bytes,
    mut sink: impl FnMut(&[f32], usize, u32) -> Result<(), AudioError>,
) -> Result<String, AudioError> {
    let detected = detect(&bytes);
    let unsupported = |why: String| {
        AudioError::Unsupported(format!(
            "The file is not audio this service can read: its bytes are {detected}{why}. Accepted: {}.",
            formats.accepted
        ))
    };
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let mut format = formats
        .probe
        .probe(
            &Hint::new(),
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => unsupported(String::new()),
            other => AudioError::Corrupt(format!(
                "The file looks like {detected} but cannot be read: {other}."
            )),
        })?;
    let (track_id, params) = format
        .tracks()
        .iter()
        .find_map(|t| Some((t.id, t.codec_params.as_ref()?.audio()?.clone())))
        .ok_or_else(|| unsupported(" with no audio track".into()))?;
    let codec = formats
        .codecs
        .get_audio_decoder(params.codec)
        .map(|c| c.codec.info.short_name)
        .unwrap_or("an unknown codec");
    let described = format!("{detected} ({codec})");
    let mut decoder = formats
        .codecs
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|_| {
            unsupported(format!(
                " holding {codec} audio, a codec this service does not decode"
            ))
        })?;
    let mut samples: Vec<f32> = Vec::new();
    let (mut good, mut broken) = (0u64, 0u64);
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            // The end of the file (also where a truncated file stops).
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) if good > 0 => {
                tracing::debug!(error = %e, "audio ends in broken data");
                break;
            }
            Err(e) => {
                return Err(AudioError::Corrupt(format!(
                    "The file is {described} but cannot be read: {e}."
                )))
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                broken += 1;
                if broken > 16 && broken > good {
                    return Err(AudioError::Corrupt(format!(
                        "The file is {described} but most of its audio is broken."
                    )));
                }
                continue;
            }
            Err(e) => {
                return Err(AudioError::Corrupt(format!(
                    "The file is {described} but its audio cannot be decoded: {e}."
                )))
            }
        };
        good += 1;
        if decoded.frames() == 0 {
            continue;
        }
        let (channels, rate) = (decoded.spec().channels().count(), decoded.spec().rate());
        if !SAMPLE_RATES.contains(&rate) {
            return Err(AudioError::Corrupt(format!(
                "The file is {described} but says its audio has {rate} samples a second, \
                 which no recording has: it is likely damaged."
            )));
        }
        decoded.copy_to_vec_interleaved(&mut samples);
        sink(&samples, channels.max(1), rate)?;
    }
    if good == 0 {
        return Err(AudioError::Corrupt(format!(
            "The file is {described} but holds no audio that can be decoded."
        )));
    }
    Ok(described)
}
