//! `edgecsm say`: text to speech with CSM. The text is spoken as `--speaker`, optionally after
//! earlier turns of a conversation (`--context`, see [`edgecsm::csm::context_file`]); frames
//! are decoded by a streaming Mimi decoder as they are generated and written out at once
//! (`--out -` streams the WAV to stdout: `edgecsm say "Hi" --out - | aplay`), with progress on
//! stderr. The output is opened first, so an unwritable `--out` fails before any work; a
//! regular file appears complete or not at all.

use super::audio::FormatArg;
use super::generate::{CodebooksArg, Sampling, SamplingArgs, describe_stop, load_csm};
use clap::Args;
use edgecsm::audio::{Output, WavWriter, check_codes, read_codes, read_mono, resample};
use edgecsm::csm::context_file::{ContextTurn, TurnAudio, read_context};
use edgecsm::csm::prompt::{PromptFormatter, Turn};
use edgecsm::csm::{Conversation, Csm, CsmConfig, Segment, StopReason};
use edgecsm::mimi::{Mimi, MimiDecoderStream};
use edgecsm::{Error, Result};
use std::io::{IsTerminal, Read, Write};
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
/// Longest text read from standard input (`say -`).
const MAX_STDIN_TEXT: u64 = 1 << 20;

#[derive(Args, Debug)]
pub struct SayArgs {
    /// What to say (`-`: read the text from standard input).
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
    /// Output WAV file (mono, 24 kHz); a regular file is written only on success; `-` streams
    /// to standard output as frames are generated.
    #[arg(long, value_name = "OUT.wav")]
    pub out: PathBuf,
    /// Longest utterance in seconds (default: generation_config.json's max_new_tokens frames,
    /// else 10 s).
    #[arg(long, value_name = "S")]
    pub max_seconds: Option<f64>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub codebooks: CodebooksArg,
    /// Sample format of the output.
    #[arg(long, value_enum, default_value = "s16")]
    pub sample_format: FormatArg,
    /// Write raw little-endian samples in --sample-format, without a WAV header.
    #[arg(long)]
    pub raw: bool,
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
        "{} is a RANDOM-WEIGHT TEST MODEL: it runs the whole pipeline but produces no \
         speech, whatever the text.\n\
         note: for real speech fetch sesame/csm-1b on a machine with hub access (e.g. \
         `huggingface-cli download sesame/csm-1b --local-dir models/csm-1b`), convert it with \
         `edgecsm quantize --model models/csm-1b --dtype q8 --out models/csm-1b-q8` and pass \
         `--model models/csm-1b-q8` (see the README, \"Speech generation (CSM)\").",
        dir.display()
    )
}

/// A context turn's audio as frames-major codes of the `n` codebooks in use
/// (`frames * n`): a WAV is encoded with `n` codebooks (the leading `n` codes of a full
/// encode, by residual quantization), a code file gives its first `n` rows.
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
            if codes.nrows() < n {
                return Err(Error::Invalid(format!(
                    "{}: codes have {} codebooks, the model uses {n} (shape must be [{n}, \
                     frames] or more rows, of which the first {n} are read)",
                    p.display(),
                    codes.nrows()
                )));
            }
            let used = codes.slice(ndarray::s![..n, ..]);
            check_codes(used, codec.config(), &p.display().to_string())?
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
            if !self.tty {
                log::info!("{}", self.line(frames));
            } else if log::log_enabled!(log::Level::Info) {
                // an updating line, which the logger's one line per event cannot draw
                let _ = write!(std::io::stderr().lock(), "\r{line}");
            }
        }
    }

    fn finish(&self) {
        if self.tty && self.last > 0.0 && log::log_enabled!(log::Level::Info) {
            eprintln!();
        }
    }
}

/// The text to say: the argument, or standard input for `-`.
fn text_of(arg: &str) -> Result<String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_TEXT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("<stdin>", e))?;
    if bytes.len() as u64 > MAX_STDIN_TEXT {
        return Err(Error::Invalid(format!(
            "the text on standard input is longer than {MAX_STDIN_TEXT} bytes"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Invalid("the text on standard input is not UTF-8".into()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Invalid(
            "no text on standard input (`say -` reads what to say from it)".into(),
        ));
    }
    Ok(text.to_string())
}

pub fn run(threads: usize, a: SayArgs) -> Result<String> {
    if let Some(s) = a.max_seconds
        && !(s.is_finite() && s > 0.0)
    {
        return Err(Error::Invalid(format!(
            "--max-seconds must be a positive number, got {s}"
        )));
    }
    // the output first: an unwritable --out fails before any work
    let mut out = Output::create(&a.out)?;
    let dir = match &a.model {
        Some(d) => d.clone(),
        None => bundled_model()?,
    };
    let sampling = Sampling::resolve(&dir, &a.sampling)?;
    let text = text_of(&a.text)?;
    let context = match &a.context {
        Some(c) => read_context(c)?,
        None => Vec::new(),
    };
    let test_model = dir.join(TEST_MODEL_MARKER).is_file();
    if test_model {
        log::warn!("{}", test_model_notice(&dir));
    }
    let csm = load_csm(&dir, threads, a.codebooks)?;
    let cfg = CsmConfig::load(dir.join("config.json"))?;
    let prompts = PromptFormatter::from_file(dir.join("tokenizer.json"))?;
    prompts.check_config(&cfg)?;
    let codec = csm
        .codec()
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("{}: the model has no codec", dir.display())))?;
    let (rate, frame_size) = (codec.config().sampling_rate, codec.frame_size());
    let frame_seconds = frame_size as f64 / rate as f64;

    let mut ids = Vec::new();
    prompts.segment(
        &Turn {
            speaker: a.speaker,
            text: &text,
            audio_frames: None,
        },
        &mut ids,
    )?;
    let max_frames = frame_limit(&a, &sampling, frame_seconds, &csm, ids.len())?;
    if csm.codebooks() < csm.num_codebooks() {
        log::info!(
            "generating the first {} of the model's {} codebooks per frame (fewer bytes per frame; an \
             approximation: the model was trained on all of them)",
            csm.codebooks(),
            csm.num_codebooks()
        );
    }
    let mut conv = Conversation::new(csm.clone());
    // the new turn: its prompt, the frames and the closing audio-eos position
    let reserve = ids.len() + max_frames + 1;
    add_context(&mut conv, &csm, &codec, &prompts, &context, reserve)?;
    log::info!(
        "speaker {} ({} prompt tokens after {} context positions), {}, up to {max_frames} \
         frames ({:.2} s)",
        a.speaker,
        ids.len(),
        conv.positions(),
        sampling.describe(),
        max_frames as f64 * frame_seconds
    );

    let mut wav = WavWriter::start(&mut out, rate as u32, a.sample_format.into(), a.raw)?;
    let mut decoder = MimiDecoderStream::new(codec.clone())?;
    let mut pcm = vec![0.0f32; frame_size];
    let mut decoded = 0;
    let mut failure = None;
    let mut progress = Progress::new(frame_seconds);
    let label = format!("[{}]{}", a.speaker, text);
    let mut on_frame = |frame: &[u32]| -> Result<()> {
        decoder.decode_frame(frame, &mut pcm)?;
        if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "the codec produced a non-finite sample ({}) in frame {decoded}: its weights \
                 hold NaN or infinite values (a corrupt or badly converted checkpoint?)",
                pcm[i]
            )));
        }
        wav.write(&mut out, &pcm)?;
        if out.is_stream() {
            // a listener (`| aplay`) hears each frame as soon as it exists
            out.flush().map_err(|e| Error::io(out.path(), e))?;
        }
        decoded += 1;
        progress.frame(decoded);
        Ok(())
    };
    let g = conv.generate(
        Segment::new(label, ids, Vec::new()),
        &sampling.options(max_frames),
        |frame| match on_frame(frame) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    progress.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(m) = g.context.eviction_message() {
        log::info!("{m}");
    }
    let samples = wav.samples();
    wav.finish(&mut out)?;
    out.commit()?;
    let stop = if g.stop == StopReason::MaxFrames {
        format!("max-seconds reached ({max_frames} frames)")
    } else {
        describe_stop(&g.stop)
    };
    log::info!(
        "done: {}; stop: {stop}{}",
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
        samples as f64 / rate as f64
    ))
}

/// Frames to generate at most: `--max-seconds`, else generation_config.json's
/// `max_new_tokens`, else 10 s; limited to what fits in the backbone after the prompt (the
/// oldest context turns make room for them, see [`add_context`]).
fn frame_limit(
    a: &SayArgs,
    sampling: &Sampling,
    frame_seconds: f64,
    csm: &Csm,
    prompt: usize,
) -> Result<usize> {
    let max = csm.dims().backbone.max_positions;
    // the frames and the closing audio-eos position
    let limit = max
        .checked_sub(prompt + 1)
        .filter(|&f| f > 0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the text takes {prompt} positions: no room to speak it in the model's {max}"
            ))
        })?;
    let want = match a.max_seconds {
        // saturating: a huge --max-seconds is capped below
        Some(s) => ((s / frame_seconds).ceil() as usize).max(1),
        None => sampling
            .max_new_frames
            .unwrap_or((DEFAULT_MAX_SECONDS / frame_seconds).ceil() as usize)
            .max(1),
    };
    if want > limit {
        log::warn!(
            "the model holds {max} positions: at most {limit} frames ({:.2} s) fit after \
             the prompt",
            limit as f64 * frame_seconds
        );
    }
    Ok(want.min(limit))
}

/// Encodes the newest context turns that fit beside the new turn (`reserve` positions) and
/// prefills them in one go, logging each on stderr; older turns are dropped unread (one line
/// says so).
fn add_context(
    conv: &mut Conversation,
    csm: &Arc<Csm>,
    codec: &Mimi,
    prompts: &PromptFormatter,
    turns: &[ContextTurn],
    reserve: usize,
) -> Result<()> {
    let n = csm.codebooks();
    let room = csm.dims().backbone.max_positions.saturating_sub(reserve);
    let (mut segs, mut logs, mut used) = (Vec::new(), Vec::new(), 0);
    for (i, t) in turns.iter().enumerate().rev() {
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
        if used + ids.len() > room {
            break;
        }
        used += ids.len();
        let source = match &t.audio {
            TurnAudio::Wav(p) | TurnAudio::Codes(p) => p.display().to_string(),
        };
        logs.push(format!(
            "context {label}: {frames} frames from {source}, {} positions",
            ids.len()
        ));
        segs.push(Segment::new(label, ids, codes));
    }
    let dropped = turns.len() - segs.len();
    for l in logs.iter().rev() {
        log::info!("{l}");
    }
    if dropped > 0 {
        log::warn!(
            "context full: dropped the {dropped} oldest turn(s) (turns 0 to {}): the \
             newest {} ({used} positions) fit beside this turn's {reserve} in the model's {}",
            dropped - 1,
            segs.len(),
            csm.dims().backbone.max_positions
        );
    }
    segs.reverse();
    let report = conv.add_segments(segs, reserve)?;
    if let Some(m) = report.eviction_message() {
        log::info!("{m}");
    }
    Ok(())
}
