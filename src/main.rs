//! The `edgecsm` command line: one subcommand per task, global options shared by all.
//!
//! Every failure is printed as one `error: <message>` line on stderr with a non-zero exit code.

mod cli;

use clap::{Args, Parser, Subcommand, ValueEnum};
use edgecsm::kernels::Kernels;
use edgecsm::quantize::{self, Mode};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "edgecsm",
    version,
    about = "CPU speech runtime: Mimi codec and CSM"
)]
struct Cli {
    /// Compute threads (0 = one per core).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a model directory to Q8 or F16 safetensors for fast, zero-copy loading.
    Quantize(QuantizeArgs),
    /// Encode a WAV file into Mimi codes (int64 .npy, [codebooks, frames]).
    Encode(cli::encode::EncodeArgs),
    /// Decode Mimi codes (int64 .npy, [codebooks, frames]) into a WAV file.
    Decode(cli::decode::DecodeArgs),
    /// Speak TEXT with CSM (optionally after earlier turns) into a WAV file.
    Say(cli::say::SayArgs),
    /// Generate CSM audio codes from pre-tokenized input ids (+ context codes).
    Generate(cli::generate::GenerateArgs),
    /// Run capture -> Mimi encode -> decode -> playback on ALSA devices and print latency figures.
    Loop(cli::audio::LoopArgs),
    /// List the ALSA PCMs (names usable as --capture/--playback).
    Devices,
    /// Run the voice daemon: CSM speech on ALSA playback, live voice context from capture,
    /// controlled over a Unix socket (JSON lines).
    Serve(cli::serve::ServeArgs),
    /// Write a random-weight model of a published shape (csm-1b, kyutai/mimi) for benchmarks
    /// and board tests: not speech.
    Synth(cli::synth::SynthArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DtypeArg {
    Q8,
    F16,
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// Source model directory (config.json + safetensors shards).
    #[arg(long)]
    model: PathBuf,
    /// Target format.
    #[arg(long, value_enum)]
    dtype: DtypeArg,
    /// Output directory (must not exist unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Keep tensors whose name contains PATTERN at F16 instead of Q8 (repeatable).
    #[arg(long, value_name = "PATTERN")]
    keep: Vec<String>,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
    /// Print only the summary, not one line per tensor.
    #[arg(long, short)]
    quiet: bool,
}

/// What every subcommand gets besides its own arguments.
struct Context {
    threads: usize,
}

fn main() -> ExitCode {
    let cli = cli::options_file::parse::<Cli>();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> edgecsm::Result<()> {
    Kernels::init()?;
    let ctx = Context {
        threads: cli.threads,
    };
    match cli.command {
        Command::Quantize(args) => run_quantize(&ctx, args),
        Command::Encode(args) => report(cli::encode::run(ctx.threads, args)?),
        Command::Decode(args) => report(cli::decode::run(ctx.threads, args)?),
        Command::Say(args) => report(cli::say::run(ctx.threads, args)?),
        Command::Generate(args) => report(cli::generate::run(ctx.threads, args)?),
        Command::Loop(args) => cli::audio::run_loop(ctx.threads, args),
        Command::Devices => cli::audio::run_devices(),
        Command::Serve(args) => cli::serve::run_serve(ctx.threads, args),
        Command::Synth(args) => report(cli::synth::run(args)?),
    }
}

/// Prints a subcommand's one-line summary (a closed stdout is not an error of the work done).
fn report(line: String) -> edgecsm::Result<()> {
    let _ = writeln!(std::io::stdout(), "{line}");
    Ok(())
}

fn run_quantize(_ctx: &Context, a: QuantizeArgs) -> edgecsm::Result<()> {
    let opts = quantize::Options {
        model: a.model,
        out: a.out,
        mode: match a.dtype {
            DtypeArg::Q8 => Mode::Q8,
            DtypeArg::F16 => Mode::F16,
        },
        keep: a.keep,
        force: a.force,
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut sink = std::io::sink();
    let log: &mut dyn Write = if a.quiet { &mut sink } else { &mut lock };
    let summary = quantize::quantize(&opts, log)?;
    // a closed stdout (e.g. piped into `head`) is not an error of the conversion
    let _ = writeln!(lock, "{summary}\nwrote {}", opts.out.display());
    Ok(())
}
