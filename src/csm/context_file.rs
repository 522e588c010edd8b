//! The `--context` file of `edgecsm say`: a JSON array of earlier turns, in order:
//! `[{"speaker": 0, "text": "Hi.", "audio": "turn0.wav"}, {"speaker": 1, "text": "Hello!",
//! "codes": "turn1.npy"}]`. Every turn needs its audio, as the upstream processor requires,
//! either a WAV file (any rate; resampled and encoded with the model's codec) or int64 Mimi
//! codes `[codebooks, frames]` (what `edgecsm encode` writes). Paths are relative to the JSON
//! file; the argument may also name a directory holding `context.json`. `speaker` is a
//! non-negative integer or a string of digits (as in the upstream chat template).

use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The file looked for when the argument is a directory.
pub const FILE_NAME: &str = "context.json";

/// Where a context turn's audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnAudio {
    Wav(PathBuf),
    Codes(PathBuf),
}

/// One earlier turn: who spoke, what was said, and its audio.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextTurn {
    pub speaker: u32,
    pub text: String,
    pub audio: TurnAudio,
}

/// Reads the context file `arg` (or `arg/context.json` for a directory); checks the
/// structure and that the audio files exist, not their content.
pub fn read_context(arg: &Path) -> Result<Vec<ContextTurn>> {
    let path = if arg.is_dir() {
        arg.join(FILE_NAME)
    } else {
        arg.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse_context(&text, &path)
}

/// Parses the text of the context file at `path` (audio paths are relative to its directory).
pub fn parse_context(text: &str, path: &Path) -> Result<Vec<ContextTurn>> {
    let base = path.parent().unwrap_or(Path::new(""));
    let bad = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let turns = value.as_array().ok_or_else(|| {
        bad("the context must be a JSON array of turns like \
             [{\"speaker\": 0, \"text\": \"...\", \"audio\": \"turn0.wav\"}]"
            .into())
    })?;
    let mut out = Vec::with_capacity(turns.len());
    for (i, t) in turns.iter().enumerate() {
        let obj = t
            .as_object()
            .ok_or_else(|| bad(format!("turn {i} must be an object, got {t}")))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["speaker", "text", "audio", "codes"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "turn {i}: unknown key {k:?} (expected speaker, text, and audio or codes)"
            )));
        }
        let speaker = match obj.get("speaker") {
            Some(Value::Number(n)) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u32>().ok()
            }
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "turn {i}: `speaker` must be a non-negative integer such as 0 or \"1\", got {}",
                obj.get("speaker")
                    .map_or("nothing".into(), Value::to_string)
            ))
        })?;
        let text = obj
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad(format!(
                    "turn {i} (speaker {speaker}): `text` must be a string"
                ))
            })?
            .to_string();
        let file = |key: &str| -> Result<Option<PathBuf>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => {
                    let f = base.join(s);
                    if !f.is_file() {
                        return Err(bad(format!(
                            "turn {i} (speaker {speaker}): {key} file {:?} not found",
                            f.display().to_string()
                        )));
                    }
                    Ok(Some(f))
                }
                Some(v) => Err(bad(format!(
                    "turn {i} (speaker {speaker}): `{key}` must be a file name, got {v}"
                ))),
            }
        };
        let audio = match (file("audio")?, file("codes")?) {
            (Some(w), None) => TurnAudio::Wav(w),
            (None, Some(c)) => TurnAudio::Codes(c),
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "turn {i} (speaker {speaker}): give either `audio` or `codes`, not both"
                )));
            }
            (None, None) => {
                return Err(bad(format!(
                    "turn {i} (speaker {speaker}) has no audio: every context turn needs \
                     `audio` (a WAV file) or `codes` (int64 .npy [codebooks, frames]), as the \
                     upstream model requires"
                )));
            }
        };
        out.push(ContextTurn {
            speaker,
            text,
            audio,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("context.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn context_turns_parse_with_paths_relative_to_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.wav"), b"").unwrap();
        std::fs::write(d.path().join("b.npy"), b"").unwrap();
        write(
            d.path(),
            r#"[{"speaker": 0, "text": "Hi.", "audio": "a.wav"},
                {"speaker": "1", "text": "Yo", "codes": "b.npy"}]"#,
        );
        let turns = read_context(d.path()).unwrap();
        assert_eq!(
            turns,
            vec![
                ContextTurn {
                    speaker: 0,
                    text: "Hi.".into(),
                    audio: TurnAudio::Wav(d.path().join("a.wav")),
                },
                ContextTurn {
                    speaker: 1,
                    text: "Yo".into(),
                    audio: TurnAudio::Codes(d.path().join("b.npy")),
                },
            ]
        );
    }

    #[test]
    fn bad_context_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.wav"), b"").unwrap();
        std::fs::write(d.path().join("a.npy"), b"").unwrap();
        for (json, want) in [
            (
                r#"[{"speaker": 0, "text": "x", "audio": "b.wav"}]"#,
                "audio file",
            ),
            ("{", "not valid JSON"),
            (r#"{"speaker": 0}"#, "must be a JSON array"),
            (r#"[{"speaker": 0, "text": "x"}]"#, "has no audio"),
            (
                r#"[{"speaker": "alice", "text": "x", "audio": "a.wav"}]"#,
                "`speaker` must be",
            ),
            (
                r#"[{"speaker": -1, "text": "x", "audio": "a.wav"}]"#,
                "`speaker` must be",
            ),
            (r#"[{"speaker": 0, "audio": "a.wav"}]"#, "`text` must be"),
            (
                r#"[{"speaker": 0, "text": "x", "wav": "a.wav"}]"#,
                "unknown key \"wav\"",
            ),
            (
                r#"[{"speaker": 0, "text": "x", "audio": "a.wav", "codes": "a.npy"}]"#,
                "not both",
            ),
        ] {
            let p = write(d.path(), json);
            let e = read_context(&p).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("context.json"),
                "{json}: {e}"
            );
        }
    }
}
