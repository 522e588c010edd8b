//! `edgecsm generate`: CSM generation from pre-tokenized input. The input ids (int64 `[seq]`)
//! are in the upstream processor's layout: text ids with one `<|AUDIO|>` placeholder per frame
//! of context audio and an `<|audio_eos|>` after each turn's audio; the context codes (int64
//! `[codebooks, frames]`, what `edgecsm encode` writes) fill the placeholders in order. The
//! generated frames are written as int64 `[codebooks, frames]`, decodable by `edgecsm decode`.
//!
//! With `--codebooks N` the model generates codebooks `0..N` of each frame (the output is
//! `[N, frames]`) and reads only the first N rows of the context codes (see
//! [`edgecsm::csm::model`]).
//!
//! Also home of what the CSM subcommands share: the sampling options with their defaults from
//! the model's `generation_config.json`, `--codebooks`, loading, and the wording of why
//! generation stopped.

use clap::Args;
use edgecsm::audio::codes::to_array;
use edgecsm::audio::npy::read_i64;
use edgecsm::audio::{Output, read_codes};
use edgecsm::csm::{
    Conversation, Csm, FrameEngine, GenerateOptions, InvalidCodes, SamplingParams, Segment,
    StopReason,
};
use edgecsm::kernels::Pool;
use edgecsm::{Error, Result};
use ndarray::Array1;
use ndarray_npy::WriteNpyExt;
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sampling options shared by `say` and `generate`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature for every codebook (default: the model's generation_config.json,
    /// else 0.9); 0 = greedy.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Sample among the K most likely codes (default: generation_config.json, else 50);
    /// 1 = greedy, 0 = all.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Seed of the sampler: the same seed, input and model give the same output.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

/// `--codebooks`, shared by `say`, `generate` and `serve`.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct CodebooksArg {
    /// Codebooks generated per 80 ms frame: `all` (32 for csm-1b) or 1 to the model's count.
    /// Each one fewer skips a depth-decoder step; fewer than all is an approximation (the
    /// model was trained on all of them). Context audio is cut to the same codebooks.
    #[arg(long, value_name = "N", default_value = "all", value_parser = parse_codebooks)]
    pub codebooks: Codebooks,
}

/// How many codebooks to generate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codebooks {
    /// All the model's.
    #[default]
    All,
    /// Codebooks `0..n` (n >= 1; at most the model's count, checked at load).
    First(usize),
}

fn parse_codebooks(s: &str) -> std::result::Result<Codebooks, String> {
    match s.trim() {
        "all" => Ok(Codebooks::All),
        t => match t.parse::<usize>() {
            Ok(0) => Err("at least 1 codebook (or `all`)".into()),
            Ok(n) => Ok(Codebooks::First(n)),
            Err(_) => Err(format!(
                "`{s}` is neither a number of codebooks (1 to the model's count) nor `all`"
            )),
        },
    }
}

impl Codebooks {
    /// Applies the choice to a loaded model (`dir` for the error message).
    pub fn apply(self, csm: &mut Csm, dir: &Path) -> Result<()> {
        let Codebooks::First(n) = self else {
            return Ok(());
        };
        csm.set_codebooks(n).map_err(|_| {
            Error::Invalid(format!(
                "--codebooks {n}: the model in {} generates 1 to {} codebooks per frame",
                dir.display(),
                csm.num_codebooks()
            ))
        })
    }
}

/// Sampling of both stages as resolved from the command line and the model directory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub backbone: SamplingParams,
    pub depth: SamplingParams,
    pub seed: u64,
    /// `max_new_tokens` of generation_config.json (frames), when present.
    pub max_new_frames: Option<usize>,
}

impl Sampling {
    /// Reads `dir/generation_config.json` (upstream defaults when it is absent) and applies
    /// the command-line overrides to both stages.
    pub fn resolve(dir: &Path, a: &SamplingArgs) -> Result<Sampling> {
        if let Some(t) = a.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "--temperature must be a finite number >= 0, got {t}"
            )));
        }
        let path = dir.join("generation_config.json");
        let cfg = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Value>(&text).map_err(|e| Error::BadConfig {
                path: path.clone(),
                msg: format!("not valid JSON: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let stage = |prefix: &str| -> Result<SamplingParams> {
            let key = |k: &str| format!("{prefix}{k}");
            let num = |k: &str| -> Result<Option<f64>> {
                match cfg.get(key(k)) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v.as_f64().map(Some).ok_or_else(|| Error::BadConfig {
                        path: path.clone(),
                        msg: format!("`{}` must be a number, got {v}", key(k)),
                    }),
                }
            };
            let d = SamplingParams::CSM_DEFAULT;
            let do_sample = cfg
                .get(key("do_sample"))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let mut p = SamplingParams {
                temperature: num("temperature")?.map_or(d.temperature, |t| t as f32),
                top_k: num("top_k")?.map_or(d.top_k, |k| k as usize),
            };
            if !do_sample {
                p = SamplingParams::GREEDY;
            }
            if let Some(t) = a.temperature {
                p.temperature = t;
                if !do_sample && t > 0.0 {
                    p.top_k = num("top_k")?.map_or(d.top_k, |k| k as usize);
                }
            }
            if let Some(k) = a.top_k {
                p.top_k = k;
            }
            Ok(p)
        };
        let max_new_frames = match cfg.get("max_new_tokens") {
            Some(v) => v.as_u64().map(|n| n as usize),
            None => None,
        };
        Ok(Sampling {
            backbone: stage("")?,
            depth: stage("depth_decoder_")?,
            seed: a.seed,
            max_new_frames,
        })
    }

    /// The options of one turn of at most `max_frames` frames. Codes the codec cannot decode
    /// (the audio vocabulary's extra ids) are never drawn, so every frame is decodable.
    pub fn options(&self, max_frames: usize) -> GenerateOptions {
        GenerateOptions {
            max_frames,
            backbone: self.backbone,
            depth: self.depth,
            seed: self.seed,
            invalid_codes: InvalidCodes::Mask,
        }
    }

    /// E.g. `temperature 0.9, top-k 50, seed 0` or `greedy`.
    pub fn describe(&self) -> String {
        let one = |p: &SamplingParams| {
            if p.is_greedy() {
                "greedy".to_string()
            } else {
                format!("temperature {}, top-k {}", p.temperature, p.top_k)
            }
        };
        let (b, d) = (one(&self.backbone), one(&self.depth));
        let stages = if b == d {
            b
        } else {
            format!("codebook 0 {b}; depth decoder {d}")
        };
        if self.backbone.is_greedy() && self.depth.is_greedy() {
            stages
        } else {
            format!("{stages}, seed {}", self.seed)
        }
    }
}

/// Why a turn ended, for summaries.
pub fn describe_stop(stop: &StopReason) -> String {
    match stop {
        StopReason::EndOfSpeech => "end-of-speech frame".into(),
        StopReason::MaxFrames => "frame limit reached".into(),
        StopReason::InvalidCode { codebook, code } => format!(
            "undecodable code {code} in codebook {codebook} (not a codec code: the utterance \
             ends before that frame)"
        ),
        StopReason::Stopped => "stopped".into(),
    }
}

/// Loads the CSM in `dir` computing on `threads` threads (0 = one per core) and generating
/// the codebooks `codebooks` asks for, with a clear error when `dir` is not a model directory
/// or the model has fewer codebooks.
pub fn load_csm(dir: &Path, threads: usize, codebooks: CodebooksArg) -> Result<Arc<Csm>> {
    if !dir.join("config.json").is_file() {
        return Err(Error::Invalid(format!(
            "{}: not a model directory (no config.json)",
            dir.display()
        )));
    }
    let mut csm = Csm::load(dir)?;
    codebooks.codebooks.apply(&mut csm, dir)?;
    csm.set_pool(Arc::new(Pool::new(threads)))?;
    Ok(Arc::new(csm))
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// CSM model directory (config.json + safetensors, e.g. a `quantize` output).
    #[arg(long)]
    pub model: PathBuf,
    /// Input ids: int64 .npy, shape [seq], upstream layout (text ids, audio placeholders,
    /// audio-eos ids).
    #[arg(long, value_name = "IDS.npy")]
    pub input_ids: PathBuf,
    /// Codes filling the audio placeholders in order: int64 .npy [codebooks, frames] (at
    /// least the codebooks generated; the first that many rows are read).
    #[arg(long, value_name = "CODES.npy")]
    pub audio_codes: Option<PathBuf>,
    /// Frames to generate at most (80 ms each at csm-1b's 12.5 Hz); capped to what fits in
    /// the model's positions after the input.
    #[arg(long, value_name = "N")]
    pub max_frames: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub codebooks: CodebooksArg,
    /// Output .npy file (int64 [codebooks, frames]); a regular file is written only on
    /// success; `-` is standard output.
    #[arg(long, value_name = "CODES.npy")]
    pub out: PathBuf,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// Reads an int64 `[seq]` array of token ids.
fn read_ids(path: &Path) -> Result<Vec<u32>> {
    let ids: Array1<i64> = read_i64(path, "input ids", "1-D [seq]")?;
    if ids.is_empty() {
        return Err(bad(path, "no input ids"));
    }
    ids.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v).map_err(|_| {
                bad(
                    path,
                    format!("input id {v} at position {i} is not a token id"),
                )
            })
        })
        .collect()
}

/// Reads the first `codebooks` rows of `[rows, frames]` codes (`rows >= codebooks`: a full
/// encode has all the model's codebooks, of which only the leading ones in use are read) as
/// frames-major `frames * codebooks` values.
fn read_frames(path: &Path, codebooks: usize, audio_vocab: usize) -> Result<(Vec<u32>, usize)> {
    let codes = read_codes(path)?;
    let (n, frames) = codes.dim();
    if n < codebooks {
        return Err(bad(
            path,
            format!(
                "codes have {n} codebooks, the model uses {codebooks} (shape must be \
                 [{codebooks}, frames] or more rows, of which the first {codebooks} are read)"
            ),
        ));
    }
    let mut out = Vec::with_capacity(codebooks * frames);
    for t in 0..frames {
        for q in 0..codebooks {
            let v = codes[[q, t]];
            if v < 0 || v as u64 >= audio_vocab as u64 {
                return Err(bad(
                    path,
                    format!(
                        "code {v} at codebook {q}, frame {t} is outside the model's audio vocabulary 0..{audio_vocab}"
                    ),
                ));
            }
            out.push(v as u32);
        }
    }
    Ok((out, frames))
}

pub fn run(threads: usize, a: GenerateArgs) -> Result<String> {
    if a.max_frames == 0 {
        return Err(Error::Invalid("--max-frames must be at least 1".into()));
    }
    // the output first: an unwritable --out fails before any work
    let mut out_file = Output::create(&a.out)?;
    let sampling = Sampling::resolve(&a.model, &a.sampling)?;
    let ids = read_ids(&a.input_ids)?;
    let csm = load_csm(&a.model, threads, a.codebooks)?;
    let d = csm.dims().clone();
    let (codes, frames) = match &a.audio_codes {
        Some(p) => read_frames(p, csm.codebooks(), d.audio_vocab)?,
        None => (Vec::new(), 0),
    };
    let placeholders = ids.iter().filter(|&&i| i == d.audio_token_id).count();
    if placeholders != frames {
        let source = a
            .audio_codes
            .as_ref()
            .map_or("no --audio-codes".to_string(), |p| {
                format!("{} has {frames}", p.display())
            });
        return Err(Error::Invalid(format!(
            "{} has {placeholders} audio placeholders (id {}) but {source} frames: they must \
             match one to one",
            a.input_ids.display(),
            d.audio_token_id
        )));
    }
    FrameEngine::check_input(&csm, &ids, &codes).map_err(|e| bad(&a.input_ids, e))?;
    // at most what fits after the input: the frames and the closing audio-eos position
    let max = d.backbone.max_positions;
    let fits = max.saturating_sub(ids.len() + 1);
    if fits == 0 {
        return Err(Error::Invalid(format!(
            "{}: the input takes {} positions: no room to generate in the model's {max}",
            a.input_ids.display(),
            ids.len()
        )));
    }
    let max_frames = if a.max_frames > fits {
        log::warn!(
            "--max-frames {} capped to {fits}: the model holds {max} positions and \
             the input takes {}",
            a.max_frames,
            ids.len()
        );
        fits
    } else {
        a.max_frames
    };
    let mut conv = Conversation::new(csm.clone());
    let label = a.input_ids.display().to_string();
    let positions = ids.len();
    let n = csm.codebooks();
    let mut out: Vec<u32> = Vec::with_capacity(max_frames * n);
    let t0 = std::time::Instant::now();
    let mut marks = Vec::with_capacity(max_frames);
    let g = conv.generate(
        Segment::new(label, ids, codes),
        &sampling.options(max_frames),
        |f| {
            out.extend_from_slice(f);
            marks.push(t0.elapsed().as_secs_f64());
            ControlFlow::Continue(())
        },
    )?;
    let timing = match (marks.first(), marks.last()) {
        (Some(first), Some(last)) if marks.len() > 1 => format!(
            "; first frame after {first:.3} s, then {:.0} ms per frame",
            (last - first) / (marks.len() - 1) as f64 * 1e3
        ),
        (Some(first), _) => format!("; first frame after {first:.3} s"),
        _ => String::new(),
    };
    let rows: Vec<Vec<u32>> = (0..n)
        .map(|q| out.iter().skip(q).step_by(n).copied().collect())
        .collect();
    to_array(&rows)?
        .write_npy(&mut out_file)
        .map_err(|e| bad(&a.out, format!("cannot write codes ({e})")))?;
    out_file.commit()?;
    let stop = if g.stop == StopReason::MaxFrames {
        format!("--max-frames {max_frames} reached")
    } else {
        describe_stop(&g.stop)
    };
    Ok(format!(
        "{}: {} positions -> {} frames x {n} codebooks ({}; stop: {stop}{timing}) -> {}",
        a.input_ids.display(),
        positions,
        g.frames,
        sampling.describe(),
        a.out.display()
    ))
}
