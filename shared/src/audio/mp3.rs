//! Samples → the mp3 the voice call takes: 44.1 kHz, joint stereo,
//! 192 kbit/s CBR (protocol section 9, the reference service's settings).
//! LAME resamples from the input's rate itself; channels are made two here.

use std::ffi::{c_char, c_void, CStr};

use mp3lame_encoder::{
    ffi, max_required_buffer_size, Bitrate, Builder, FlushNoGap, InterleavedPcm, Quality,
};

use super::AudioError;

pub(super) const OUT_RATE: u32 = 44_100;

pub(super) struct Encoder {
    lame: mp3lame_encoder::Encoder,
    /// The input's sample rate, which LAME resamples to `OUT_RATE`.
    in_rate: u32,
    out: Vec<u8>,
    /// The input made stereo (reused between packets).
    stereo: Vec<f32>,
}

fn failed(what: &str, e: impl std::fmt::Debug) -> AudioError {
    AudioError::Encoder(format!("the mp3 encoder failed to {what}: {e:?}"))
}

/// A sample as LAME may take it: within [-1, 1]. A broken file decodes to
/// anything (a corrupted mp3's gain gives samples in the thousands, a float
/// wav NaN), and LAME 3.100 then fails an `assert` in its bit allocation
/// (`CBR_iteration_loop`), which aborts the process: mp3lame-sys builds it
/// without `NDEBUG`, so in release builds too, and in the self-hosted server
/// that is every request in flight. A sound file's samples are in range
/// already, or clipped by a hair.
fn in_range(sample: f32) -> f32 {
    if sample.is_nan() {
        0.0
    } else {
        sample.clamp(-1.0, 1.0)
    }
}

/// What LAME reports goes to our logs, not to stderr. Left alone, LAME
/// prints its messages there itself (`lame_report_def`): plain lines, such as
/// "strange error flushing buffer ..." on some broken inputs, among the
/// functions' JSON log lines, and with no request to tell them apart.
///
/// LAME calls a report function as `void (*)(const char *format, va_list)`.
/// mp3lame-sys types it as a C-variadic function, which stable Rust cannot
/// define, so this is the function LAME calls, and the variadic type is only
/// the binding's name for it. Only `format` is read: the `va_list`, a
/// pointer on x86_64 and aarch64 alike (AAPCS64 passes the 32-byte struct by
/// reference), is left alone, so a message's `%d`s are logged unexpanded.
/// Nothing here can unwind into C: a null is skipped, the text is lossy.
macro_rules! lame_report {
    ($name:ident, $level:ident) => {
        unsafe extern "C" fn $name(format: *const c_char, _args: *mut c_void) {
            if !format.is_null() {
                // SAFETY: LAME's formats are NUL-terminated literals.
                let said = unsafe { CStr::from_ptr(format) }.to_string_lossy();
                tracing::$level!(target: "lame", "LAME: {}", said.trim_end());
            }
        }
    };
}
lame_report!(lame_error, warn);
lame_report!(lame_note, debug);

/// Points LAME's three reports at the two above (before `build`, which is
/// where `lame_init_params` copies them).
fn report_to_logs(builder: &mut Builder) {
    type Report = unsafe extern "C" fn(*const c_char, *mut c_void);
    let as_binding = |f: Report| {
        // SAFETY: the same function pointer under the binding's type; LAME
        // calls it as the two-argument function it is (see `lame_report`).
        Some(unsafe { std::mem::transmute::<Report, unsafe extern "C" fn(*const c_char, ...)>(f) })
    };
    // SAFETY: the builder owns a live `lame_global_flags`; the setters only
    // store the pointer, and cannot fail on a valid one.
    unsafe {
        let lame = builder.as_ptr();
        ffi::lame_set_errorf(lame, as_binding(lame_error));
        ffi::lame_set_msgf(lame, as_binding(lame_note));
        ffi::lame_set_debugf(lame, as_binding(lame_note));
    }
}

impl Encoder {
    pub(super) fn new(in_rate: u32) -> Result<Self, AudioError> {
        let mut builder = Builder::new().ok_or_else(|| failed("start", "no memory"))?;
        report_to_logs(&mut builder);
        builder
            .set_num_channels(2)
            .map_err(|e| failed("set channels", e))?;
        builder
            .set_sample_rate(in_rate)
            .map_err(|e| failed(&format!("take {in_rate} Hz"), e))?;
        builder
            .set_output_sample_rate(std::num::NonZeroU32::new(OUT_RATE))
            .map_err(|e| failed("set the output rate", e))?;
        builder
            .set_brate(Bitrate::Kbps192)
            .map_err(|e| failed("set the bitrate", e))?;
        // Quality 7 ("fast, ok quality") rather than LAME's default 5: the
        // listener is a speech recognizer, the source is often lossy already,
        // and 5 costs more CPU for nothing it hears (BENCHMARKS.md).
        builder
            .set_quality(Quality::Ok)
            .map_err(|e| failed("set the quality", e))?;
        Ok(Self {
            lame: builder.build().map_err(|e| failed("start", e))?,
            in_rate,
            out: Vec::new(),
            stereo: Vec::new(),
        })
    }

    /// Interleaved samples with `channels` channels: mono is doubled, stereo
    /// kept, more channels are mixed down to both sides equally (speech sits
    /// in the centre channel of surround mixes).
    pub(super) fn push(&mut self, samples: &[f32], channels: usize) -> Result<(), AudioError> {
        self.stereo.clear();
        match channels {
            2 => self.stereo.extend(samples.iter().map(|&s| in_range(s))),
            _ => {
                let scale = 1.0 / channels as f32;
                for frame in samples.chunks_exact(channels) {
                    let mixed = in_range(frame.iter().sum::<f32>() * scale);
                    self.stereo.extend_from_slice(&[mixed, mixed]);
                }
            }
        }
        let input = &self.stereo;
        // LAME's worst case (`max_required_buffer_size`: 1.25 bytes a frame
        // and 7,200) counts the frames it encodes, which are the input's
        // resampled to 44.1 kHz. From a lower rate there are more of them:
        // 5.5 times as many from 8 kHz telephony, whose FLAC blocks may be
        // 16,384 frames long; sized for the input's frames, such a block
        // failed as `BufferTooSmall`, a 500 for a valid file.
        let frames = input.len() / 2;
        let resampled = (frames as u64 * u64::from(OUT_RATE)).div_ceil(u64::from(self.in_rate));
        self.out
            .reserve(max_required_buffer_size(frames.max(resampled as usize)));
        self.lame
            .encode_to_vec(InterleavedPcm(input), &mut self.out)
            .map_err(|e| failed("encode", e))?;
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Vec<u8>, AudioError> {
        self.out.reserve(7200);
        self.lame
            .flush_to_vec::<FlushNoGap>(&mut self.out)
            .map_err(|e| failed("finish", e))?;
        Ok(self.out)
    }
}
