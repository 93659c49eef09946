//! The mp3 of a synthesis → raw PCM as OpenAI's `pcm` format is: 24 kHz,
//! 16-bit signed little-endian, mono; and the RIFF header that makes it
//! OpenAI's `wav`. Each mp3 part is converted on its own, so parts stream
//! out as they arrive; rubato's FFT resampler does a fixed-ratio
//! conversion well (the parts' rate is whatever the upstream chose).

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::{decode, AudioError};

/// The rate of OpenAI's `pcm` and `wav` output.
pub(crate) const PCM_RATE: u32 = 24_000;

/// One mp3 (a part of a synthesis) → 24 kHz 16-bit mono little-endian PCM.
pub(crate) fn mp3_to_pcm16(mp3: bytes::Bytes) -> Result<Vec<u8>, AudioError> {
    let mut mono = Vec::new();
    let mut rate = 0;
    decode::decode(&decode::MP3, mp3, |samples, channels, sample_rate| {
        rate = sample_rate;
        let scale = 1.0 / channels as f32;
        mono.extend(
            samples
                .chunks_exact(channels)
                .map(|f| f.iter().sum::<f32>() * scale),
        );
        Ok(())
    })?;
    let resampled = if rate == PCM_RATE || mono.is_empty() {
        mono
    } else {
        resample(&mono, rate)?
    };
    let mut out = Vec::with_capacity(resampled.len() * 2);
    for s in resampled {
        let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

fn resample(mono: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    let failed = |e: &dyn std::fmt::Display| {
        AudioError::Encoder(format!("resampling {rate} Hz to {PCM_RATE} Hz failed: {e}"))
    };
    let mut resampler =
        Fft::<f32>::new(rate as usize, PCM_RATE as usize, 1024, 1, FixedSync::Input)
            .map_err(|e| failed(&e))?;
    let input = InterleavedSlice::new(mono, 1, mono.len()).map_err(|e| failed(&e))?;
    let needed = resampler.process_all_needed_output_len(mono.len());
    let mut out = vec![0.0f32; needed];
    let mut output = InterleavedSlice::new_mut(&mut out, 1, needed).map_err(|e| failed(&e))?;
    let (_, produced) = resampler
        .process_all_into_buffer(&input, &mut output, mono.len(), None)
        .map_err(|e| failed(&e))?;
    out.truncate(produced);
    Ok(out)
}

/// The 44-byte RIFF/WAVE header of `data_len` bytes of `PCM_RATE` 16-bit mono.
pub(crate) fn wav_header(data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let byte_rate = PCM_RATE * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&PCM_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}
