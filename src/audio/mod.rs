//! Files at the edges of the codec: WAV in any common rate, channel count and sample format
//! (read, downmixed to mono, resampled to the model rate), WAV out (s16 or f32, to a file or
//! streamed; [`sample`]: the s16/f32 formats and conversion WAV and ALSA share), Mimi code arrays and token ids as int64 NumPy files, and the output policy
//! every command that writes a file follows ([`output`]: atomic replacement of regular files,
//! in-place writes to FIFOs and devices, `-` for stdout) with removal of partial outputs on
//! SIGINT/SIGTERM ([`cleanup`]).

pub mod cleanup;
pub mod codes;
pub mod npy;
pub mod output;
pub mod resample;
pub mod sample;
pub mod wav;

pub use codes::check_codes;
pub use npy::{read_codes, write_codes};
pub use output::{Output, write_output};
pub use resample::resample;
pub use sample::{SampleFormat, f32_to_s16, s16_to_f32};
pub use wav::{WavWriter, read_mono, write_wav};
