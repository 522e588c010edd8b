//! The `edgecsm` command line: one subcommand per task, global options shared by all.
//!
//! Every failure is printed as one `error: <message>` line on stderr with a non-zero exit code.

mod cli;

use clap::{Args, CommandFactory, Parser, Subcommand};
use edgecsm::audio::output::is_stdout;
use edgecsm::kernels::Kernels;
use edgecsm::quantize;
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
    #[arg(long, global = true, default_value_t = 0, display_order = 900)]
    threads: usize,
    /// More log lines: -v for debug, -vv for trace (RUST_LOG overrides).
    #[arg(long, short, global = true, action = clap::ArgAction::Count, display_order = 901)]
    verbose: u8,
    /// Only warnings and errors on stderr (for quantize: only the summary on stdout).
    #[arg(long, short, global = true, display_order = 902)]
    quiet: bool,
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

impl Command {
    /// The subcommand's name (it prefixes the log lines).
    fn name(&self) -> &'static str {
        match self {
            Command::Quantize(_) => "quantize",
            Command::Encode(_) => "encode",
            Command::Decode(_) => "decode",
            Command::Say(_) => "say",
            Command::Generate(_) => "generate",
            Command::Loop(_) => "loop",
            Command::Devices => "devices",
            Command::Serve(_) => "serve",
            Command::Synth(_) => "synth",
        }
    }
}

/// `--dtype`: a preset or a per-component policy.
fn parse_policy(s: &str) -> Result<quantize::Policy, String> {
    quantize::Policy::parse(s)
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// Source model directory (config.json + safetensors shards).
    #[arg(long)]
    model: PathBuf,
    /// Target format: a preset (f16, q8, q4, q4-q8heads, q4-q8depth, q4-f16codec) or a
    /// per-component policy such as `q4,depth=q8,codec=f16` (components: backbone, depth,
    /// heads, embeddings, codec; see the README).
    #[arg(long, value_parser = parse_policy)]
    dtype: quantize::Policy,
    /// Output directory (must not exist unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Keep tensors whose name contains PATTERN at F16 (repeatable).
    #[arg(long, value_name = "PATTERN")]
    keep: Vec<String>,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
}

/// What every subcommand gets besides its own arguments.
struct Context {
    threads: usize,
    quiet: bool,
}

/// Most compute threads `--threads` accepts (far beyond any board; a typo like 1000000 would
/// otherwise fail spawning threads).
const MAX_THREADS: usize = 1024;

fn main() -> ExitCode {
    // the options of a subcommand's `--config` file first, then the one parse
    let args = match cli::options_file::expand(&Cli::command(), std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if edgecsm::audio::cleanup::interrupted() {
                // a signal is ending the process (its partial output vanished under the work):
                // the signal, not this error, is the news
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
            eprintln!("error: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// `msg` with control characters (a newline in a file name or in a file's content quoted by
/// an error) escaped, so that an error is always one line.
fn one_line(msg: &str) -> String {
    msg.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

/// `--help` and `--version` print as usual; every other argument error is one `error:` line
/// (clap's first line, with a pointer to the help) and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // clap's first line, with the indented lines that continue it (the missing arguments,
    // the possible values)
    let text = e.render().to_string();
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid arguments").trim();
    let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let more: Vec<&str> = lines
        .take_while(|l| l.starts_with(' '))
        .map(str::trim)
        .collect();
    if !more.is_empty() {
        msg = format!("{msg} {}", more.join(", "));
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        msg = "a command is required".into();
    }
    // point at the help of the subcommand given, if any
    let cmd = Cli::command();
    let sub = std::env::args()
        .skip(1)
        .find(|a| cmd.get_subcommands().any(|s| s.get_name() == a));
    let help = match sub {
        Some(s) => format!("edgecsm {s} --help"),
        None => "edgecsm --help".into(),
    };
    eprintln!("error: {msg} (see `{help}`)");
    ExitCode::from(2)
}

fn run(cli: Cli) -> edgecsm::Result<()> {
    if cli.threads > MAX_THREADS {
        return Err(edgecsm::Error::Invalid(format!(
            "--threads {} is more than {MAX_THREADS} (0 = one per core, here {})",
            cli.threads,
            edgecsm::kernels::pool::thread_count(0)
        )));
    }
    cli::logger::init(cli.command.name(), cli.verbose, cli.quiet)
        .map_err(edgecsm::Error::Invalid)?;
    Kernels::init()?;
    let ctx = Context {
        threads: cli.threads,
        quiet: cli.quiet,
    };
    let out = match &cli.command {
        Command::Quantize(a) => Some(&a.out),
        Command::Encode(a) => Some(&a.out),
        Command::Decode(a) => Some(&a.out),
        Command::Say(a) => Some(&a.out),
        Command::Generate(a) => Some(&a.out),
        // synth writes a model directory by its own rules (not yet under the output policy)
        Command::Loop(_) | Command::Devices | Command::Serve(_) | Command::Synth(_) => None,
    };
    // with `--out -` the summary goes to stderr: stdout carries the output
    let to_stdout = out.is_some_and(|p| is_stdout(p));
    if out.is_some() {
        // SIGINT/SIGTERM/SIGHUP remove partial outputs before the process ends
        if let Err(e) = edgecsm::audio::cleanup::install() {
            log::warn!("cannot handle interruptions ({e}): a partial output may remain");
        }
    }
    match cli.command {
        Command::Quantize(args) => run_quantize(&ctx, args),
        Command::Encode(args) => report(cli::encode::run(ctx.threads, args)?, to_stdout),
        Command::Decode(args) => report(cli::decode::run(ctx.threads, args)?, to_stdout),
        Command::Say(args) => report(cli::say::run(ctx.threads, args)?, to_stdout),
        Command::Generate(args) => report(cli::generate::run(ctx.threads, args)?, to_stdout),
        Command::Loop(args) => cli::audio::run_loop(ctx.threads, args),
        Command::Devices => cli::audio::run_devices(),
        Command::Serve(args) => cli::serve::run_serve(ctx.threads, args),
        Command::Synth(args) => report(cli::synth::run(args)?, false),
    }
}

/// Prints a subcommand's one-line summary: on stdout, or on stderr when stdout carries the
/// output itself (`--out -`). A closed stdout is not an error of the work done.
fn report(line: String, output_on_stdout: bool) -> edgecsm::Result<()> {
    if output_on_stdout {
        eprintln!("{line}");
    } else {
        let _ = writeln!(std::io::stdout(), "{line}");
    }
    Ok(())
}

fn run_quantize(ctx: &Context, a: QuantizeArgs) -> edgecsm::Result<()> {
    let opts = quantize::Options {
        model: a.model,
        out: a.out,
        policy: a.dtype,
        keep: a.keep,
        force: a.force,
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut sink = std::io::sink();
    let log: &mut dyn Write = if ctx.quiet { &mut sink } else { &mut lock };
    let summary = quantize::quantize(&opts, log)?;
    // a closed stdout (e.g. piped into `head`) is not an error of the conversion
    let _ = writeln!(lock, "{summary}\nwrote {}", opts.out.display());
    Ok(())
}
