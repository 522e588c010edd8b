//! `edgecsm say`: text to speech with CSM. The text is spoken as `--speaker`, optionally after
//! earlier turns of a conversation (`--context`: text + audio of each turn); frames are decoded
//! by a streaming Mimi decoder as they are generated, with progress on stderr, and the WAV is
//! written (atomically) at the end.
//!
//! The context file is a JSON array of turns, in order:
//! `[{"speaker": 0, "text": "Hi.", "audio": "turn0.wav"}, {"speaker": 1, "text": "Hello!",
//! "codes": "turn1.npy"}]`: every turn needs its audio, as the upstream processor requires,
//! either a WAV file (any rate; resampled and encoded with the model's codec) or int64 Mimi
//! codes `[codebooks, frames]` (what `edgecsm encode` writes). Paths are relative to the JSON
//! file. `--context` may also name a directory holding `context.json`.

use super::decode::SampleFormatArg;
use super::generate::{Sampling, SamplingArgs, describe_stop, load_csm};
use clap::Args;
use edgecsm::audio::{SampleFormat, check_codes, read_codes, read_mono, resample, write_wav};
use edgecsm::csm::prompt::{PromptFormatter, Turn};
use edgecsm::csm::{Conversation, Csm, CsmConfig, Segment, StopReason};
use edgecsm::mimi::{Mimi, MimiDecoderStream};
use edgecsm::{Error, Result};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The bundled model, relative to the repository root.
const BUNDLED_MODEL: &str = "models/csm-tiny";
/// A file that marks a model directory as a random-weight test model.
const TEST_MODEL_MARKER: &str = "EDGECSM_TEST_MODEL";
/// Longest utterance when neither `--max-seconds` nor `max_new_tokens` says otherwise.
const DEFAULT_MAX_SECONDS: f64 = 10.0;

#[derive(Args, Debug)]
pub struct SayArgs {
    /// What to say.
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// Speaker id of the new turn (the `[N]` prefix of the prompt).
    #[arg(long, default_value_t = 0)]
    pub speaker: u32,
    /// Earlier turns: a JSON file, or a directory holding `context.json` (see `edgecsm say
    /// --help` and the README for the format).
    #[arg(long, value_name = "DIR-or-JSON")]
    pub context: Option<PathBuf>,
    /// CSM model directory (default: the bundled random-weight test model models/csm-tiny).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output WAV file (mono, 24 kHz); written only on success.
    #[arg(long, value_name = "OUT.wav")]
    pub out: PathBuf,
    /// Longest utterance in seconds (default: generation_config.json's max_new_tokens frames,
    /// else 10 s).
    #[arg(long, value_name = "S")]
    pub max_seconds: Option<f64>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Sample format of the output.
    #[arg(long, value_enum, default_value = "s16")]
    pub sample_format: SampleFormatArg,
}

/// Where a context turn's audio comes from.
#[derive(Debug, Clone, PartialEq)]
enum TurnAudio {
    Wav(PathBuf),
    Codes(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
struct ContextTurn {
    speaker: u32,
    text: String,
    audio: TurnAudio,
}

/// The bundled model: `models/csm-tiny` under the current directory, else under an ancestor
/// of the executable (`target/release/edgecsm` in a checkout), else in the source tree this
/// binary was built from.
fn bundled_model() -> Result<PathBuf> {
    let mut tried = vec![PathBuf::from(BUNDLED_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        tried.extend(exe.ancestors().skip(1).map(|a| a.join(BUNDLED_MODEL)));
    }
    tried.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_MODEL));
    tried
        .iter()
        .find(|p| p.join("config.json").is_file())
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no --model given and the bundled {BUNDLED_MODEL} was not found (looked in the \
                 current directory and next to the executable): pass --model DIR"
            ))
        })
}

/// The note printed when the model is a random-weight test model.
fn test_model_notice(dir: &Path) -> String {
    format!(
        "note: {} is a RANDOM-WEIGHT TEST MODEL: it runs the whole pipeline but produces no \
         speech, whatever the text.\n\
         note: for real speech fetch sesame/csm-1b on a machine with hub access (e.g. \
         `huggingface-cli download sesame/csm-1b --local-dir models/csm-1b`), convert it with \
         `edgecsm quantize --model models/csm-1b --dtype f16 --out models/csm-1b-f16` and pass \
         `--model models/csm-1b-f16` (see the README, \"Speech generation (CSM)\").",
        dir.display()
    )
}

/// Parses the context file (see the module docs); checks the structure, not the audio.
fn read_context(arg: &Path) -> Result<Vec<ContextTurn>> {
    let path = if arg.is_dir() {
        arg.join("context.json")
    } else {
        arg.to_path_buf()
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    let value: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
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
                "turn {i}: unknown key `{k}` (expected speaker, text, and audio or codes)"
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
                            "turn {i} (speaker {speaker}): {key} file {} not found",
                            f.display()
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

/// A context turn's audio as frames-major codes (`frames * num_codebooks`).
fn turn_codes(turn: &ContextTurn, codec: &Mimi, n: usize) -> Result<(Vec<u32>, usize)> {
    let rows = match &turn.audio {
        TurnAudio::Wav(p) => {
            let clip = read_mono(p)?;
            if clip.samples.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: the audio is empty",
                    p.display()
                )));
            }
            let rate = codec.config().sampling_rate as u32;
            let pcm = resample(&clip.samples, clip.sample_rate, rate)?;
            codec.encode(&pcm, n)?
        }
        TurnAudio::Codes(p) => {
            let codes = read_codes(p)?;
            if codes.nrows() != n {
                return Err(Error::Invalid(format!(
                    "{}: codes have {} codebooks, the model uses {n} (shape must be [{n}, frames])",
                    p.display(),
                    codes.nrows()
                )));
            }
            check_codes(codes.view(), codec.config(), &p.display().to_string())?
        }
    };
    let frames = rows.first().map_or(0, Vec::len);
    let flat = (0..frames)
        .flat_map(|t| rows.iter().map(move |r| r[t]))
        .collect();
    Ok((flat, frames))
}

/// Prints progress on stderr: an updating line on a terminal, else a line per second.
struct Progress {
    tty: bool,
    start: Instant,
    last: f64,
    frame_seconds: f64,
    /// When the first frame was decoded (s since start).
    first: Option<f64>,
}

impl Progress {
    fn new(frame_seconds: f64) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: 0.0,
            frame_seconds,
            first: None,
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn line(&self, frames: usize) -> String {
        let audio = frames as f64 * self.frame_seconds;
        let rtf = if audio > 0.0 {
            self.elapsed() / audio
        } else {
            0.0
        };
        let mut line = format!("{frames} frames, {audio:.2} s of audio, real-time factor {rtf:.2}");
        if let Some(first) = self.first
            && frames > 1
        {
            line += &format!(
                " (first frame after {first:.2} s, then {:.0} ms per frame)",
                (self.elapsed() - first) / (frames - 1) as f64 * 1e3
            );
        }
        line
    }

    fn frame(&mut self, frames: usize) {
        let t = self.elapsed();
        self.first.get_or_insert(t);
        if t - self.last >= 1.0 {
            self.last = t;
            let line = format!("say: {}", self.line(frames));
            let mut e = std::io::stderr().lock();
            let _ = if self.tty {
                write!(e, "\r{line}")
            } else {
                writeln!(e, "{line}")
            };
        }
    }

    fn finish(&self) {
        if self.tty && self.last > 0.0 {
            eprintln!();
        }
    }
}

pub fn run(threads: usize, a: SayArgs) -> Result<String> {
    if let Some(s) = a.max_seconds
        && !(s.is_finite() && s > 0.0)
    {
        return Err(Error::Invalid(format!(
            "--max-seconds must be a positive number, got {s}"
        )));
    }
    let dir = match &a.model {
        Some(d) => d.clone(),
        None => bundled_model()?,
    };
    let sampling = Sampling::resolve(&dir, &a.sampling)?;
    let context = match &a.context {
        Some(c) => read_context(c)?,
        None => Vec::new(),
    };
    let test_model = dir.join(TEST_MODEL_MARKER).is_file();
    if test_model {
        eprintln!("{}", test_model_notice(&dir));
    }
    let csm = load_csm(&dir, threads)?;
    let cfg = CsmConfig::load(dir.join("config.json"))?;
    let prompts = PromptFormatter::from_file(dir.join("tokenizer.json"))?;
    prompts.check_config(&cfg)?;
    let codec = csm
        .codec()
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("{}: the model has no codec", dir.display())))?;
    let (rate, frame_size) = (codec.config().sampling_rate, codec.frame_size());
    let frame_seconds = frame_size as f64 / rate as f64;

    let mut conv = Conversation::new(csm.clone());
    add_context(&mut conv, &csm, &codec, &prompts, &context)?;
    let mut ids = Vec::new();
    prompts.segment(
        &Turn {
            speaker: a.speaker,
            text: &a.text,
            audio_frames: None,
        },
        &mut ids,
    )?;
    let max_frames = frame_limit(
        &a,
        &sampling,
        frame_seconds,
        &csm,
        conv.positions(),
        ids.len(),
    )?;
    eprintln!(
        "say: speaker {} ({} prompt tokens after {} context positions), {}, up to {max_frames} \
         frames ({:.2} s)",
        a.speaker,
        ids.len(),
        conv.positions(),
        sampling.describe(),
        max_frames as f64 * frame_seconds
    );

    let mut decoder = MimiDecoderStream::new(codec.clone())?;
    let mut pcm = vec![0.0f32; max_frames * frame_size];
    let mut decoded = 0;
    let mut failure = None;
    let mut progress = Progress::new(frame_seconds);
    let label = format!("[{}]{}", a.speaker, a.text);
    let g = conv.generate(
        Segment::new(label, ids, Vec::new()),
        &sampling.options(max_frames),
        |frame| {
            let out = &mut pcm[decoded * frame_size..(decoded + 1) * frame_size];
            if let Err(e) = decoder.decode_frame(frame, out) {
                failure = Some(e);
                return ControlFlow::Break(());
            }
            decoded += 1;
            progress.frame(decoded);
            ControlFlow::Continue(())
        },
    )?;
    progress.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(m) = g.context.eviction_message() {
        eprintln!("say: {m}");
    }
    pcm.truncate(decoded * frame_size);
    let format = match a.sample_format {
        SampleFormatArg::S16 => SampleFormat::S16,
        SampleFormatArg::F32 => SampleFormat::F32,
    };
    write_wav(&a.out, &pcm, rate as u32, format)?;
    let stop = if g.stop == StopReason::MaxFrames {
        format!("max-seconds reached ({max_frames} frames)")
    } else {
        describe_stop(&g.stop)
    };
    eprintln!(
        "say: done: {}; stop: {stop}{}",
        progress.line(decoded),
        if test_model {
            " [random-weight test model: not speech]"
        } else {
            ""
        }
    );
    Ok(format!(
        "{}: {:.2} s at {rate} Hz ({decoded} frames)",
        a.out.display(),
        pcm.len() as f64 / rate as f64
    ))
}

/// Frames to generate at most: `--max-seconds`, else generation_config.json's
/// `max_new_tokens`, else 10 s; limited to what fits in the backbone after the prompt (and,
/// for the default, after the context too, so that the default never evicts context).
fn frame_limit(
    a: &SayArgs,
    sampling: &Sampling,
    frame_seconds: f64,
    csm: &Csm,
    context: usize,
    prompt: usize,
) -> Result<usize> {
    let max = csm.dims().backbone.max_positions;
    // the frames and the closing audio-eos position
    let fits_alone = max
        .checked_sub(prompt + 1)
        .filter(|&f| f > 0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the text takes {prompt} positions: no room to speak it in the model's {max}"
            ))
        })?;
    let (want, limit) = match a.max_seconds {
        Some(s) => (((s / frame_seconds).ceil() as usize).max(1), fits_alone),
        None => {
            let want = sampling
                .max_new_frames
                .unwrap_or((DEFAULT_MAX_SECONDS / frame_seconds).ceil() as usize)
                .max(1);
            let after_context = fits_alone.saturating_sub(context);
            (
                want,
                if after_context > 0 {
                    after_context
                } else {
                    fits_alone
                },
            )
        }
    };
    if want > limit {
        eprintln!(
            "say: the model holds {max} positions: at most {limit} frames ({:.2} s) fit after \
             the prompt{}",
            limit as f64 * frame_seconds,
            if a.max_seconds.is_none() && context > 0 {
                " and the context"
            } else {
                ""
            }
        );
    }
    Ok(want.min(limit))
}

/// Encodes and prefills the context turns, logging each (and any eviction) on stderr.
fn add_context(
    conv: &mut Conversation,
    csm: &Arc<Csm>,
    codec: &Mimi,
    prompts: &PromptFormatter,
    turns: &[ContextTurn],
) -> Result<()> {
    let n = csm.num_codebooks();
    for (i, t) in turns.iter().enumerate() {
        let label = format!("turn {i} (speaker {})", t.speaker);
        let (codes, frames) =
            turn_codes(t, codec, n).map_err(|e| Error::Invalid(format!("context {label}: {e}")))?;
        let mut ids = Vec::new();
        prompts.segment(
            &Turn {
                speaker: t.speaker,
                text: &t.text,
                audio_frames: Some(frames),
            },
            &mut ids,
        )?;
        let source = match &t.audio {
            TurnAudio::Wav(p) | TurnAudio::Codes(p) => p.display().to_string(),
        };
        let report = conv.add_segment(Segment::new(label.clone(), ids, codes))?;
        eprintln!(
            "say: context {label}: {frames} frames from {source}, {} positions",
            report.prefilled_positions
        );
        if let Some(m) = report.eviction_message() {
            eprintln!("say: {m}");
        }
    }
    Ok(())
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
                "unknown key `wav`",
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
