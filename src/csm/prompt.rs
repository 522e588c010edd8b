//! CSM prompt formatting: conversation turns -> token ids, exactly as the upstream
//! `CsmProcessor.apply_chat_template` lays them out.
//!
//! The chat template of the published checkpoint renders each turn as
//! `<|begin_of_text|>[{speaker}]{text}<|end_of_text|>`, followed, when the turn has audio, by
//! `<|AUDIO|><|audio_eos|>`; the processor then repeats `<|AUDIO|>` once per Mimi frame of that
//! audio and tokenizes the whole string without adding special tokens. Special tokens split the
//! string, so each `[{speaker}]{text}` piece is byte-level-BPE encoded on its own, which is what
//! [`PromptFormatter::segment`] does. In the model, each `<|AUDIO|>` position takes the
//! embedding of one frame of codes (in order) and each `<|audio_eos|>` the all-eos frame.

use std::path::Path;
use std::str::FromStr;

use tokenizers::Tokenizer;

use super::config::CsmConfig;
use crate::{Error, Result};

/// The special tokens of the CSM text stream, by their content in `tokenizer.json`.
pub const BOS_TOKEN: &str = "<|begin_of_text|>";
pub const EOS_TOKEN: &str = "<|end_of_text|>";
pub const AUDIO_TOKEN: &str = "<|AUDIO|>";
pub const AUDIO_EOS_TOKEN: &str = "<|audio_eos|>";

/// One conversation turn: who speaks, what they say, and how many Mimi frames of their audio
/// are in the context (`None`: a text-only turn, e.g. the one to be spoken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    pub speaker: u32,
    pub text: &'a str,
    pub audio_frames: Option<usize>,
}

/// Mimi frames the upstream processor reserves for `samples` audio samples: `ceil(samples /
/// frame_size)` (the causal encoder pads the last partial frame).
pub fn audio_frames_for_samples(samples: usize, frame_size: usize) -> usize {
    samples.div_ceil(frame_size)
}

/// Formats turns with the model's `tokenizer.json`.
pub struct PromptFormatter {
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    audio: u32,
    audio_eos: u32,
}

impl std::fmt::Debug for PromptFormatter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptFormatter")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("audio", &self.audio)
            .field("audio_eos", &self.audio_eos)
            .finish_non_exhaustive()
    }
}

impl PromptFormatter {
    /// Loads `tokenizer.json` (a Hugging Face tokenizers file) and finds the four special tokens.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let tokenizer = Tokenizer::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a usable tokenizer.json: {e}",
                path.display()
            ))
        })?;
        Self::new(tokenizer).map_err(|e| match e {
            Error::Invalid(msg) => Error::Invalid(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Wraps a loaded tokenizer; fails if one of the special tokens is missing.
    pub fn new(tokenizer: Tokenizer) -> Result<Self> {
        let id = |content: &str| {
            tokenizer.token_to_id(content).ok_or_else(|| {
                Error::Invalid(format!(
                    "the tokenizer has no `{content}` token (not a CSM tokenizer)"
                ))
            })
        };
        Ok(PromptFormatter {
            bos: id(BOS_TOKEN)?,
            eos: id(EOS_TOKEN)?,
            audio: id(AUDIO_TOKEN)?,
            audio_eos: id(AUDIO_EOS_TOKEN)?,
            tokenizer,
        })
    }

    /// Checks that the tokenizer's special ids are the ones the model config uses and that its
    /// vocabulary fits the model's text embedding.
    pub fn check_config(&self, cfg: &CsmConfig) -> Result<()> {
        for (name, tok, want) in [
            (BOS_TOKEN, self.bos, cfg.bos_token_id),
            (AUDIO_TOKEN, self.audio, cfg.audio_token_id),
            (AUDIO_EOS_TOKEN, self.audio_eos, cfg.audio_eos_token_id),
        ] {
            if tok as usize != want {
                return Err(Error::Invalid(format!(
                    "tokenizer and model disagree: `{name}` is id {tok} in the tokenizer, {want} \
                     in config.json"
                )));
            }
        }
        let n = self.tokenizer.get_vocab_size(true);
        if n > cfg.text_vocab_size {
            return Err(Error::Invalid(format!(
                "the tokenizer has {n} tokens but the model's text vocabulary is {}",
                cfg.text_vocab_size
            )));
        }
        Ok(())
    }

    pub fn bos_id(&self) -> u32 {
        self.bos
    }
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
    pub fn audio_id(&self) -> u32 {
        self.audio
    }
    pub fn audio_eos_id(&self) -> u32 {
        self.audio_eos
    }

    /// Appends one turn's ids to `out`: `bos`, the tokens of `[speaker]text`, `eos`, then for
    /// audio `audio_frames` x `<|AUDIO|>` and one `<|audio_eos|>`.
    ///
    /// Text containing one of the four special token strings is rejected: upstream would read
    /// it as that token (and miscount the audio placeholders).
    pub fn segment(&self, turn: &Turn<'_>, out: &mut Vec<u32>) -> Result<()> {
        if let Some(tok) = [BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN]
            .iter()
            .find(|t| turn.text.contains(**t))
        {
            return Err(Error::Invalid(format!(
                "the text of speaker {} contains the special token `{tok}`",
                turn.speaker
            )));
        }
        let piece = format!("[{}]{}", turn.speaker, turn.text);
        let enc = self
            .tokenizer
            .encode(piece.as_str(), false)
            .map_err(|e| Error::Invalid(format!("cannot tokenize {piece:?}: {e}")))?;
        out.push(self.bos);
        out.extend_from_slice(enc.get_ids());
        out.push(self.eos);
        if let Some(frames) = turn.audio_frames {
            out.extend(std::iter::repeat_n(self.audio, frames));
            out.push(self.audio_eos);
        }
        Ok(())
    }

    /// The ids of a whole conversation, with the upstream chat template's checks: every turn
    /// but the last must carry audio.
    pub fn conversation(&self, turns: &[Turn<'_>]) -> Result<Vec<u32>> {
        if turns.is_empty() {
            return Err(Error::Invalid(
                "a conversation needs at least one turn".into(),
            ));
        }
        if let Some(i) = turns[..turns.len() - 1]
            .iter()
            .position(|t| t.audio_frames.is_none())
        {
            return Err(Error::Invalid(format!(
                "turn {i} (speaker {}) has no audio: every turn but the last must have audio",
                turns[i].speaker
            )));
        }
        let mut out = Vec::new();
        for t in turns {
            self.segment(t, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csm")
    }

    fn formatter(name: &str) -> PromptFormatter {
        PromptFormatter::from_file(fixtures().join(name).join("tokenizer.json")).unwrap()
    }

    fn prompts() -> serde_json::Map<String, Value> {
        let text = std::fs::read_to_string(fixtures().join("prompts.json")).unwrap();
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    /// Every fixture conversation gives the upstream processor's ids, with both models'
    /// tokenizer files.
    #[test]
    fn matches_the_upstream_processor() {
        let prompts = prompts();
        assert!(prompts.len() >= 8, "too few prompt fixtures");
        for model in ["a", "b"] {
            let f = formatter(model);
            for (name, p) in &prompts {
                let turns_json = p["turns"].as_array().unwrap();
                let turns: Vec<Turn<'_>> = turns_json
                    .iter()
                    .map(|t| Turn {
                        speaker: t["speaker"].as_u64().unwrap() as u32,
                        text: t["text"].as_str().unwrap(),
                        audio_frames: t["audio_samples"]
                            .as_u64()
                            .map(|n| audio_frames_for_samples(n as usize, 1920)),
                    })
                    .collect();
                for (t, j) in turns.iter().zip(turns_json) {
                    assert_eq!(
                        t.audio_frames.map(|n| n as u64),
                        j["audio_frames"].as_u64(),
                        "{name}"
                    );
                }
                let want: Vec<u32> = p["input_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                let got = f.conversation(&turns).unwrap();
                assert_eq!(got, want, "{model}/{name}");
            }
        }
    }

    #[test]
    fn special_ids_agree_with_the_fixture_configs() {
        for model in ["a", "b"] {
            let f = formatter(model);
            let cfg = CsmConfig::load(fixtures().join(model).join("config.json")).unwrap();
            f.check_config(&cfg).unwrap();
            assert_eq!(f.audio_id() as usize, cfg.audio_token_id);
            assert_eq!(f.eos_id(), f.bos_id() + 1);
            let mut wrong = cfg.clone();
            wrong.audio_eos_token_id += 1;
            let e = f.check_config(&wrong).unwrap_err().to_string();
            assert!(e.contains("<|audio_eos|>"), "{e}");
            wrong = cfg.clone();
            wrong.text_vocab_size = 100;
            assert!(f.check_config(&wrong).is_err());
        }
    }

    #[test]
    fn segment_layout() {
        let f = formatter("a");
        let mut ids = Vec::new();
        let turn = Turn {
            speaker: 3,
            text: "Hi",
            audio_frames: Some(2),
        };
        f.segment(&turn, &mut ids).unwrap();
        let (bos, eos, au, ae) = (f.bos_id(), f.eos_id(), f.audio_id(), f.audio_eos_id());
        assert_eq!(ids[0], bos);
        assert_eq!(&ids[ids.len() - 4..], &[eos, au, au, ae]);
        let n = ids.len();
        // zero frames of audio still closes the audio with <|audio_eos|>
        f.segment(
            &Turn {
                audio_frames: Some(0),
                ..turn
            },
            &mut ids,
        )
        .unwrap();
        assert_eq!(&ids[2 * n - 4..], &[eos, ae]);
    }

    #[test]
    fn rejects_bad_turns() {
        let f = formatter("a");
        let mut ids = Vec::new();
        let e = f
            .segment(
                &Turn {
                    speaker: 0,
                    text: "say <|AUDIO|> now",
                    audio_frames: None,
                },
                &mut ids,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("<|AUDIO|>"), "{e}");
        assert!(ids.is_empty());
        let t = |speaker, audio_frames| Turn {
            speaker,
            text: "x",
            audio_frames,
        };
        let e = f
            .conversation(&[t(0, Some(1)), t(1, None), t(0, None)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("turn 1 (speaker 1)"), "{e}");
        assert!(f.conversation(&[]).is_err());
        assert!(f.conversation(&[t(0, Some(2)), t(1, Some(1))]).is_ok());
    }

    #[test]
    fn load_errors_name_the_file() {
        let e = PromptFormatter::from_file("/nonexistent/tokenizer.json").unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("tokenizer.json");
        std::fs::write(&bad, "{\"model\": 3}").unwrap();
        let e = PromptFormatter::from_file(&bad).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("not a usable"),
            "{e}"
        );
        // a valid tokenizer without the CSM special tokens
        let text = std::fs::read_to_string(fixtures().join("a/tokenizer.json")).unwrap();
        let stripped = text.replace("<|audio_eos|>", "<|something_else|>");
        std::fs::write(&bad, stripped).unwrap();
        let e = PromptFormatter::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("no `<|audio_eos|>` token"), "{e}");
    }

    #[test]
    fn frames_for_samples() {
        assert_eq!(audio_frames_for_samples(0, 1920), 0);
        assert_eq!(audio_frames_for_samples(1, 1920), 1);
        assert_eq!(audio_frames_for_samples(1920, 1920), 1);
        assert_eq!(audio_frames_for_samples(1921, 1920), 2);
    }
}
