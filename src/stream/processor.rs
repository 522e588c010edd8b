//! What the compute thread runs on each frame, and the codec round trip that `edgecsm loop`
//! uses: streaming Mimi encode of the captured frame, streaming decode of its codes.

use crate::Result;
use crate::mimi::{Mimi, MimiDecoderStream, MimiEncoderStream};
use std::sync::Arc;

/// Per-frame work of the loop. Both calls get and fill exactly one period and must not
/// allocate in the steady state.
pub trait FrameProcessor: Send + 'static {
    /// Takes one captured frame (its codes are ready when this returns).
    fn analyze(&mut self, input: &[f32]) -> Result<()>;
    /// Produces one frame for playback.
    fn synthesize(&mut self, output: &mut [f32]) -> Result<()>;
}

/// Mimi encode -> decode, one frame at a time (all buffers made here).
#[derive(Debug)]
pub struct MimiRoundTrip {
    enc: MimiEncoderStream,
    dec: MimiDecoderStream,
    codes: Vec<u32>,
}

impl MimiRoundTrip {
    /// A round trip through `n_q` codebooks.
    pub fn new(mimi: Arc<Mimi>, n_q: usize) -> Result<Self> {
        Ok(MimiRoundTrip {
            enc: MimiEncoderStream::new(mimi.clone(), n_q)?,
            dec: MimiDecoderStream::new(mimi)?,
            codes: vec![0; n_q],
        })
    }

    /// The codes of the last analyzed frame.
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }
}

impl FrameProcessor for MimiRoundTrip {
    fn analyze(&mut self, input: &[f32]) -> Result<()> {
        self.enc.encode_frame(input, &mut self.codes)
    }

    fn synthesize(&mut self, output: &mut [f32]) -> Result<()> {
        self.dec.decode_frame(&self.codes, output)
    }
}
