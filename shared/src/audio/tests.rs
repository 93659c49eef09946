//! The codecs over audio made here: a tone encoded by LAME, decoded back.

use super::pcm::PCM_RATE;
use super::*;
use crate::testing::capture_logs;

/// `seconds` of a 440 Hz tone at `rate`, `channels` interleaved.
pub(crate) fn tone(seconds: f32, rate: u32, channels: usize) -> Vec<f32> {
    let frames = (seconds * rate as f32) as usize;
    (0..frames)
        .flat_map(|i| {
            let v = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5;
            std::iter::repeat_n(v, channels)
        })
        .collect()
}

/// A tone as mp3, through the same encoder the transcoder uses.
pub(crate) fn tone_mp3(seconds: f32, rate: u32) -> Vec<u8> {
    let mut encoder = mp3::Encoder::new(rate).unwrap();
    encoder.push(&tone(seconds, rate, 1), 1).unwrap();
    encoder.finish().unwrap()
}

/// A tone as a 16-bit wav, written by hand.
pub(crate) fn tone_wav(seconds: f32, rate: u32, channels: u16) -> Vec<u8> {
    let samples = tone(seconds, rate, channels as usize);
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(data_len + 36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    out.extend_from_slice(&(2 * channels).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
    }
    out
}

#[test]
fn wav_becomes_mp3_of_the_same_length() {
    for (rate, channels) in [(16_000, 1), (44_100, 2), (48_000, 6)] {
        let wav = tone_wav(2.0, rate, channels);
        let mp3 = transcode_to_mp3(wav.into(), 60).unwrap();
        assert!(
            (mp3.seconds - 2.0).abs() < 0.01,
            "{rate} Hz: {}",
            mp3.seconds
        );
        assert!(mp3.detected.contains("wav"), "{}", mp3.detected);
        // 192 kbit/s for 2 s is 48 kB, give or take LAME's padding frames.
        assert!(
            (45_000..56_000).contains(&mp3.bytes.len()),
            "{}",
            mp3.bytes.len()
        );
        // And the mp3 decodes back to about 2 s at 44.1 kHz, stereo.
        let mut frames = 0;
        let detected = decode::decode(&decode::ANY, mp3.bytes.into(), |s, ch, r| {
            assert_eq!((ch, r), (2, 44_100));
            frames += s.len() / ch;
            Ok(())
        })
        .unwrap();
        assert!(detected.contains("mpeg"), "{detected}");
        assert!((frames as f64 / 44_100.0 - 2.0).abs() < 0.1, "{frames}");
    }
}

#[test]
fn what_is_not_audio_is_named() {
    let refused = |bytes: &[u8]| transcode_to_mp3(bytes.to_vec().into(), 60).unwrap_err();
    let AudioError::Unsupported(m) = refused(b"hello, this is a text file named .mp3\n") else {
        panic!()
    };
    assert!(m.contains("text") && m.contains("Accepted: wav"), "{m}");
    let png = [
        0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', 0, 0, 0, 13,
    ];
    let AudioError::Unsupported(m) = refused(&png) else {
        panic!()
    };
    assert!(m.contains("image/png"), "{m}");
    assert!(matches!(refused(b""), AudioError::Unsupported(m) if m.contains("empty")));
    // A wav cut inside its header.
    let wav = tone_wav(1.0, 16_000, 1);
    let e = refused(&wav[..30]);
    assert!(
        matches!(&e, AudioError::Corrupt(m) | AudioError::Unsupported(m) if m.contains("wav")),
        "{e:?}"
    );
}

#[test]
fn a_wav_with_no_samples_holds_no_audio() {
    let wav = tone_wav(0.0, 16_000, 1);
    let e = transcode_to_mp3(wav.into(), 60).unwrap_err();
    assert!(
        matches!(&e, AudioError::Corrupt(m) if m.contains("no audio")),
        "{e:?}"
    );
}

#[test]
fn too_long_is_refused_while_decoding() {
    let wav = tone_wav(3.0, 8_000, 1);
    let e = transcode_to_mp3(wav.into(), 2).unwrap_err();
    assert!(
        matches!(&e, AudioError::TooLong(m) if m.contains("2 s")),
        "{e:?}"
    );
}

#[test]
fn mp3_parts_become_24k_pcm_and_wav() {
    for rate in [24_000, 32_000, 44_100] {
        let pcm = mp3_to_pcm16(tone_mp3(1.5, rate).into()).unwrap();
        // LAME adds up to a couple of frames of priming and padding.
        let seconds = pcm.len() as f64 / 2.0 / f64::from(PCM_RATE);
        assert!((1.45..1.65).contains(&seconds), "{rate} Hz: {seconds}");
        // The tone survives: its loudness is about 0.5 / sqrt(2) of full scale.
        let rms = (pcm
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])).powi(2))
            .sum::<f64>()
            / (pcm.len() / 2) as f64)
            .sqrt()
            / 32767.0;
        assert!((0.3..0.4).contains(&rms), "{rate} Hz: rms {rms}");
    }
    let h = wav_header(4800);
    assert_eq!(&h[0..4], b"RIFF");
    assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 4836);
    assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 24_000);
}

#[test]
fn a_synthesis_part_is_read_as_mp3_only() {
    // The mp3 formats read an mp3 (with an ID3v2 tag ahead of it, as
    // downloaded files carry) and nothing else: a wav is refused, named.
    let mut tagged = b"ID3\x04\x00\x00\x00\x00\x00\x0a".to_vec();
    tagged.extend_from_slice(&[0; 10]);
    tagged.extend_from_slice(&tone_mp3(1.0, 24_000));
    let (mut frames, mut rate) = (0, 0);
    let detected = decode::decode(&decode::MP3, tagged.into(), |s, ch, r| {
        (frames, rate) = (frames + s.len() / ch, r);
        Ok(())
    })
    .unwrap();
    assert!(detected.contains("mp3"), "{detected}");
    let seconds = frames as f64 / f64::from(rate);
    assert!((0.95..1.1).contains(&seconds), "{seconds}");
    let wav = tone_wav(1.0, 24_000, 1);
    let e = decode::decode(&decode::MP3, wav.into(), |_, _, _| Ok(())).unwrap_err();
    assert!(
        matches!(&e, AudioError::Corrupt(m) | AudioError::Unsupported(m) if m.contains("wav")),
        "{e:?}"
    );
}

/// One short clip in every accepted format, made with ffmpeg from espeak-ng
/// speech (`fixtures/README.md`).
const FIXTURES: [(&str, &[u8]); 9] = [
    ("wav", include_bytes!("fixtures/speech.wav")),
    ("mp3", include_bytes!("fixtures/speech.mp3")),
    ("m4a", include_bytes!("fixtures/speech.m4a")),
    ("aac", include_bytes!("fixtures/speech.aac")),
    ("ogg", include_bytes!("fixtures/speech.ogg")),
    ("opus", include_bytes!("fixtures/speech.opus")),
    ("webm", include_bytes!("fixtures/speech.webm")),
    ("flac", include_bytes!("fixtures/speech.flac")),
    // 8 kHz in one 9,600-frame block: LAME writes 5.5 times the frames.
    (
        "flac 8 kHz",
        include_bytes!("fixtures/speech-8k-one-block.flac"),
    ),
];

#[test]
fn every_fixture_transcodes() {
    for (name, bytes) in FIXTURES {
        let mp3 = transcode_to_mp3(bytes::Bytes::from_static(bytes), 60)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!((1.0..1.4).contains(&mp3.seconds), "{name}: {}", mp3.seconds);
    }
}

/// The fixtures with a few bytes changed, `variants` of each (the same ones
/// every run): changed bits, bytes, 32-bit fields set to 0, to all ones or
/// to almost 2^31, and cuts. Its own xorshift, not `rand`'s `StdRng`, whose
/// output may change between rand versions: this set is the one that caught
/// LAME's abort (mp3 #70), and another set of 100 did not.
fn mutated(variants: usize) -> impl Iterator<Item = (String, Vec<u8>)> {
    FIXTURES.into_iter().flat_map(move |(name, original)| {
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ original.len() as u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below.max(1) as u64) as usize
        };
        (0..variants).map(move |i| {
            let mut b = original.to_vec();
            for _ in 0..1 + next(8) {
                let at = next(b.len());
                let end = (at + 4).min(b.len());
                match next(6) {
                    0 => b[at] ^= 1 << next(8),
                    1 => b[at] = next(256) as u8,
                    2 => b[at..end].fill(0xff),
                    3 => b[at..end].fill(0),
                    4 if end - at == 4 => b[at..end].copy_from_slice(&0x7fff_fff0u32.to_be_bytes()),
                    _ => b.truncate(at.max(16)),
                }
            }
            (format!("{name} #{i}"), b)
        })
    })
}

/// A broken or hostile file is the caller's mistake: an `AudioError` that
/// becomes a 400, never a panic (on Lambda, where panics abort, that would be
/// the function URL's bare 502 and a cold start) and never the encoder's
/// error (a 500). symphonia 0.5 panicked on about half of these webm files
/// (its Matroska reader asserted on a broken element), and on a few m4a
/// and ADTS ones. `AUDIO_MUTATIONS` runs more of them (a release build:
/// `cargo test --release -p hailuo-gateway --lib broken_files`).
#[test]
fn broken_files_are_refused_and_never_panic() {
    let variants = std::env::var("AUDIO_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut failures = Vec::new();
    for (name, bytes) in mutated(variants) {
        let outcome = std::panic::catch_unwind(|| transcode_to_mp3(bytes.into(), 600));
        match outcome {
            Err(panic) => failures.push(format!(
                "{name} panicked: {:?}",
                crate::runtime::panic_message(&*panic)
            )),
            Ok(Err(AudioError::Encoder(m))) => failures.push(format!("{name}: encoder: {m}")),
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures, the first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[tokio::test]
async fn a_codec_that_panics_has_found_the_file_broken() {
    let outcome =
        off_thread(|| -> Result<(), AudioError> { panic!("index out of bounds in a demuxer") })
            .await;
    let Err(AudioError::Corrupt(m)) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(m.contains("damaged") && !m.contains("index"), "{m}");
    assert_eq!(off_thread(|| Ok(7)).await, Ok(7));
}

#[test]
fn a_sample_rate_no_recording_has_is_a_broken_file() {
    let wav_saying = |rate: u32| {
        let mut wav = tone_wav(0.5, 16_000, 1);
        wav[24..28].copy_from_slice(&rate.to_le_bytes());
        bytes::Bytes::from(wav)
    };
    for rate in [0u32, 999, 1_000_000, u32::MAX] {
        let e = transcode_to_mp3(wav_saying(rate), 60).unwrap_err();
        assert!(
            matches!(&e, AudioError::Corrupt(m) if m.contains("damaged")),
            "{rate} Hz: {e:?}"
        );
    }
    // The edges of what is taken, and telephony's rate.
    for rate in [1_000u32, 8_000, 384_000] {
        assert!(transcode_to_mp3(wav_saying(rate), 60).is_ok(), "{rate} Hz");
    }
}

/// LAME prints what it reports to stderr unless told otherwise: plain lines
/// among the JSON logs. This broken mp3 makes it report an error while it
/// flushes (one of the fuzzed set, found by logging them all).
#[test]
fn what_lame_reports_goes_to_the_logs() {
    let (_, bytes) = mutated(100).find(|(name, _)| name == "mp3 #27").unwrap();
    let (logs, _guard) = capture_logs();
    let outcome = transcode_to_mp3(bytes.into(), 600);
    assert!(outcome.is_ok(), "{outcome:?}");
    let text = logs.text();
    assert!(
        text.contains("WARN lame: LAME: strange error flushing buffer ...\n"),
        "{text}"
    );
}

#[tokio::test]
async fn work_off_thread_logs_in_the_callers_span() {
    use tracing::Instrument;
    let (logs, _guard) = capture_logs();
    off_thread(|| {
        tracing::warn!("from the codec");
        Ok(())
    })
    .instrument(tracing::info_span!("invoke", requestId = "r-42"))
    .await
    .unwrap();
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("requestId=\"r-42\"") && l.contains("from the codec")),
        "{text}"
    );
}
