//! CSM's input embeddings.
//!
//! A text position embeds one text token (`embed_text_tokens.weight`, `[text_vocab, hidden]`).
//! An audio position embeds a whole frame: the sum of its codebook embeddings (all
//! `num_codebooks`, or the first N when the model runs with fewer codebooks: see
//! [`super::model`]), codebook `i`'s code `c` read from row `i * audio_vocab + c` of one shared table
//! (`[num_codebooks * audio_vocab, backbone_hidden]`). The depth decoder reads single rows of
//! the same table (before its input projection).
//!
//! In transformers-format checkpoints the backbone's table
//! (`backbone_model.embed_tokens.embed_audio_tokens.weight`) is tied to, and saved only as,
//! `depth_decoder.model.embed_tokens.weight`; [`Embeddings::load`] reads whichever is stored.

use crate::weights::{WeightMatrix, Weights};
use crate::{Error, Result};

/// Name of the backbone's audio table when a checkpoint stores it under its own name.
pub const BACKBONE_AUDIO_EMBED: &str = "backbone_model.embed_tokens.embed_audio_tokens.weight";
/// The name the tied audio table is saved under in transformers-format checkpoints.
pub const DEPTH_AUDIO_EMBED: &str = "depth_decoder.model.embed_tokens.weight";
pub const TEXT_EMBED: &str = "embed_text_tokens.weight";

/// The text table and the shared audio table.
#[derive(Debug)]
pub struct Embeddings {
    text: WeightMatrix,
    audio: WeightMatrix,
    num_codebooks: usize,
    audio_vocab: usize,
    hidden: usize,
}

impl Embeddings {
    /// Loads both tables from the root of a CSM checkpoint, checking their shapes.
    pub fn load(
        w: &Weights,
        text_vocab: usize,
        num_codebooks: usize,
        audio_vocab: usize,
        hidden: usize,
    ) -> Result<Embeddings> {
        let text = w.matrix(TEXT_EMBED, &[text_vocab, hidden])?;
        let audio_name = if w.contains(BACKBONE_AUDIO_EMBED) {
            BACKBONE_AUDIO_EMBED
        } else {
            DEPTH_AUDIO_EMBED
        };
        let rows = num_codebooks.checked_mul(audio_vocab).ok_or_else(|| {
            Error::Invalid(format!(
                "num_codebooks {num_codebooks} x vocab_size {audio_vocab} overflows"
            ))
        })?;
        let audio = w.matrix(audio_name, &[rows, hidden])?;
        Ok(Embeddings {
            text,
            audio,
            num_codebooks,
            audio_vocab,
            hidden,
        })
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Writes the embedding of text token `id` into `out` (`hidden` long).
    pub fn text_into(&self, id: u32, out: &mut [f32]) -> Result<()> {
        if id as usize >= self.text.rows() {
            return Err(Error::Invalid(format!(
                "text token id {id} is outside the text vocabulary ({} ids)",
                self.text.rows()
            )));
        }
        self.text.mat().row_into(id as usize, out);
        Ok(())
    }

    /// Writes the embedding of code `code` of codebook `codebook` into `out`.
    pub fn code_into(&self, codebook: usize, code: u32, out: &mut [f32]) -> Result<()> {
        self.check_code(codebook, code)?;
        self.audio
            .mat()
            .row_into(codebook * self.audio_vocab + code as usize, out);
        Ok(())
    }

    /// Writes the sum of the codebook embeddings of `frame` into `out`: `frame` holds the
    /// codes of codebooks `0..frame.len()` (1 to `num_codebooks` of them), and only those
    /// codebooks' rows are read. `tmp` is a `hidden`-long scratch row.
    pub fn frame_into(&self, frame: &[u32], out: &mut [f32], tmp: &mut [f32]) -> Result<()> {
        if frame.is_empty() || frame.len() > self.num_codebooks {
            return Err(Error::Invalid(format!(
                "an audio frame has {} codes, the model takes 1 to {}",
                frame.len(),
                self.num_codebooks
            )));
        }
        for (i, &c) in frame.iter().enumerate() {
            self.check_code(i, c)?;
        }
        let m = self.audio.mat();
        for (i, &c) in frame.iter().enumerate() {
            let row = i * self.audio_vocab + c as usize;
            if i == 0 {
                m.row_into(row, out);
            } else {
                m.row_into(row, tmp);
                for (o, t) in out.iter_mut().zip(tmp.iter()) {
                    *o += t;
                }
            }
        }
        Ok(())
    }

    fn check_code(&self, codebook: usize, code: u32) -> Result<()> {
        if codebook >= self.num_codebooks || code as usize >= self.audio_vocab {
            return Err(Error::Invalid(format!(
                "audio code {code} of codebook {codebook} is outside the model's {} codebooks \
                 of {} ids",
                self.num_codebooks, self.audio_vocab
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csm::llama::tests::{rand_vec, write_safetensors};
    use std::collections::BTreeMap;

    #[test]
    fn frames_sum_offset_rows_and_the_tied_name_is_found() {
        let (tv, n, v, h) = (7, 3, 5, 4);
        for name in [DEPTH_AUDIO_EMBED, BACKBONE_AUDIO_EMBED] {
            let mut t = BTreeMap::new();
            let text = rand_vec(tv * h, 1, 1.0);
            let audio = rand_vec(n * v * h, 2, 1.0);
            t.insert(TEXT_EMBED.to_string(), (vec![tv, h], text.clone()));
            t.insert(name.to_string(), (vec![n * v, h], audio.clone()));
            let dir = tempfile::tempdir().unwrap();
            write_safetensors(dir.path(), &t);
            let w = Weights::open(dir.path()).unwrap();
            let e = Embeddings::load(&w, tv, n, v, h).unwrap();
            let (mut out, mut tmp) = (vec![0f32; h], vec![0f32; h]);
            e.text_into(6, &mut out).unwrap();
            assert_eq!(out, &text[6 * h..7 * h]);
            let frame = [4u32, 0, 2];
            e.frame_into(&frame, &mut out, &mut tmp).unwrap();
            for j in 0..h {
                let want: f32 = (0..n)
                    .map(|i| audio[(i * v + frame[i] as usize) * h + j])
                    .sum();
                assert!((out[j] - want).abs() < 1e-6);
            }
            e.code_into(2, 3, &mut out).unwrap();
            assert_eq!(out, &audio[(2 * v + 3) * h..(2 * v + 4) * h]);
            assert!(e.text_into(7, &mut out).is_err());
            assert!(e.frame_into(&[0, 5, 0], &mut out, &mut tmp).is_err());
            // a prefix of the codebooks sums only their rows
            e.frame_into(&frame[..2], &mut out, &mut tmp).unwrap();
            for j in 0..h {
                let want: f32 = (0..2)
                    .map(|i| audio[(i * v + frame[i] as usize) * h + j])
                    .sum();
                assert!((out[j] - want).abs() < 1e-6);
            }
            assert!(e.frame_into(&[], &mut out, &mut tmp).is_err());
            assert!(e.frame_into(&[0, 0, 0, 0], &mut out, &mut tmp).is_err());
            assert!(e.code_into(3, 0, &mut out).is_err());
            // wrong configured size names the tensor
            let err = Embeddings::load(&w, tv, n, v + 1, h)
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
