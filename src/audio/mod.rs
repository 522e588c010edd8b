//! Audio and code files at the edges of the codec: WAV in any common rate, channel count and
//! sample format (read, downmixed to mono, resampled to the model rate), WAV out (s16 or f32),
//! and Mimi code arrays as int64 NumPy files. Every file is written atomically: a temporary
//! file in the target's directory renamed into place only when complete.

pub mod atomic;
pub mod codes;
pub mod npy;
pub mod resample;
pub mod wav;

pub use codes::check_codes;
pub use npy::{read_codes, write_codes};
pub use resample::resample;
pub use wav::{SampleFormat, read_mono, write_wav};
