//! `--config FILE`: a subcommand's long options read from a `key = value` file (the daemon's
//! `/etc/edgecsm/serve.conf`).
//!
//! The file's keys are not a second list to keep in step with the command line: they are the
//! long option names of the subcommand, read from clap's own [`Command`] (global options such
//! as `--threads` included), and each `key = value` line becomes the argument `--key=value`
//! appended to the command line before the real parse. So every option, including ones added
//! to the subcommand later, works in the file with the same value syntax, defaults and checks.
//! Options given on the command line win: a key the command line already sets is skipped.
//!
//! Syntax: one `key = value` per line (spaces around `=` optional, one pair of matching quotes
//! around the value removed); blank lines and lines starting with `#` are ignored (there are no
//! comments after a value: `#` is part of it, as in systemd unit files). A flag takes `true` or
//! `false`; an option that may be repeated may appear on several lines. Any other problem (no
//! such key, a value its option rejects, a key set twice, a line without `=`) is one error
//! naming the file, the line and the key.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, error::ErrorKind};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The option that names the file; a subcommand opts in by having it.
const CONFIG: &str = "config";

/// The command line `args` (program name first) with the options from the `--config` file of
/// its subcommand appended, or unchanged when there is none. Whatever else is wrong with `args`
/// is left for the real parse to report.
pub fn expand(cmd: &Command, args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // a first parse that tolerates what the file is still to supply (required options)
    let Ok(top) = cmd.clone().ignore_errors(true).try_get_matches_from(&args) else {
        return Ok(args); // --help, --version
    };
    let Some((name, given)) = top.subcommand() else {
        return Ok(args);
    };
    let Some(file) = given.try_get_one::<PathBuf>(CONFIG).ok().flatten() else {
        return Ok(args);
    };
    // built: the global options are then among the subcommand's own
    let mut built = cmd.clone();
    built.build();
    let sub = built
        .find_subcommand(name)
        .expect("a matched subcommand is part of the command");
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the options file {}: {e}", file.display()))?;
    let extra = options(sub, file, &text, |id| {
        on_command_line(given, id) || on_command_line(&top, id)
    })?;
    let mut args = args;
    // before a `--` that ends the options, if there is one
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args.splice(at..at, extra);
    Ok(args)
}

fn on_command_line(m: &ArgMatches, id: &str) -> bool {
    m.try_contains_id(id).unwrap_or(false) && m.value_source(id) == Some(ValueSource::CommandLine)
}

/// The arguments `text` (the file `file`) stands for, for subcommand `sub` (built, so that its
/// global options are among its arguments); keys for which `skip(id)` holds are checked but
/// not passed on.
fn options(
    sub: &Command,
    file: &Path,
    text: &str,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let at = |msg: String| format!("{}:{line}: {msg}", file.display());
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            return Err(at(format!("expected `key = value`, got `{t}`")));
        };
        let (key, value) = (key.trim(), unquote(value.trim()));
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(key) && key != CONFIG && settable(a.get_action()))
        else {
            return Err(at(format!(
                "unknown key `{key}` (the keys are the long options of `edgecsm {}`: {})",
                sub.get_name(),
                keys(sub).join(", ")
            )));
        };
        if value.is_empty() {
            return Err(at(format!("no value for `{key}`")));
        }
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key)
            && !repeatable
        {
            return Err(at(format!("`{key}` is already set on line {first}")));
        }
        seen.push((key, line));
        let tokens = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                let on = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(at(format!(
                            "`{key}` is a flag: its value is `true` or `false`, not `{value}`"
                        )));
                    }
                };
                // the flag's word sets the value that is not its default
                let flip = on == matches!(arg.get_action(), ArgAction::SetTrue);
                if flip {
                    vec![format!("--{key}")]
                } else {
                    vec![]
                }
            }
            ArgAction::Count => {
                let n: u8 = value.parse().map_err(|_| {
                    at(format!(
                        "`{key}` counts: its value is a number, not `{value}`"
                    ))
                })?;
                vec![format!("--{key}"); n as usize]
            }
            _ => {
                let token = format!("--{key}={value}");
                check_value(sub, &token).map_err(|e| at(format!("`{key}`: {e}")))?;
                vec![token]
            }
        };
        if !skip(arg.get_id().as_str()) {
            out.extend(tokens.into_iter().map(OsString::from));
        }
    }
    Ok(out)
}

/// Whether an option of this kind can be given in the file (not --help / --version).
fn settable(action: &ArgAction) -> bool {
    !matches!(
        action,
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// The keys a file for `sub` may set, in the order of `sub`'s options.
pub fn keys(sub: &Command) -> Vec<&str> {
    sub.get_arguments()
        .filter(|a| settable(a.get_action()))
        .filter_map(|a| a.get_long())
        .filter(|&l| l != CONFIG)
        .collect()
}

/// Removes one pair of matching quotes around a value.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Whether `sub`'s own parser accepts `token` (`--key=value`) as a value of its option: the
/// option's value parser, possible values and value count, judged by clap itself. Errors that
/// are not about the value (a required option missing from this one-option line) do not count.
fn check_value(sub: &Command, token: &str) -> Result<(), String> {
    let probe = sub.clone().mut_args(|a| a.required(false));
    match probe.try_get_matches_from([sub.get_name(), token]) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue
                    | ErrorKind::ValueValidation
                    | ErrorKind::InvalidUtf8
                    | ErrorKind::WrongNumberOfValues
                    | ErrorKind::TooManyValues
                    | ErrorKind::NoEquals
            ) =>
        {
            // clap's message, without its `error:` prefix and the usage / help hints
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            Err(msg.join(" ").trim_start_matches("error: ").to_string())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use clap::{Args, CommandFactory, Subcommand, ValueEnum};

    #[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
    enum Mode {
        On,
        Off,
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, global = true, default_value_t = 0)]
        threads: usize,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Serve(Opts),
        Other,
    }

    #[derive(Args, Debug)]
    struct Opts {
        #[arg(long)]
        capture: String,
        #[arg(long, default_value_t = 2)]
        onset: u32,
        #[arg(long, default_value_t = -40.0, allow_negative_numbers = true)]
        level: f32,
        #[arg(long, value_enum, default_value_t = Mode::On)]
        mode: Mode,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        keep: Vec<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    }

    fn opts(cli: Cli) -> (usize, Opts) {
        match cli.cmd {
            Cmd::Serve(o) => (cli.threads, o),
            Cmd::Other => panic!("not serve"),
        }
    }

    /// Writes `text` to a file and parses `args` (after the program name) with `--config` it.
    fn run(text: &str, args: &[&str]) -> Result<(usize, Opts), String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.conf");
        std::fs::write(&file, text).unwrap();
        let mut argv: Vec<OsString> = vec!["edgecsm".into()];
        argv.extend(
            args.iter()
                .map(|a| OsString::from(a.replace("FILE", file.to_str().unwrap()))),
        );
        let full = expand(&Cli::command(), argv)?;
        let cli = Cli::try_parse_from(full).map_err(|e| format!("clap: {e}"))?;
        Ok(opts(cli))
    }

    fn err(text: &str) -> String {
        run(text, &["serve", "--config", "FILE"]).unwrap_err()
    }

    #[test]
    fn every_kind_of_option_is_read() {
        let text = "capture = hw:1,0\nonset=5\nlevel = -30.5\nmode = off\nquiet = true\n\
                    keep = a\nkeep = b\nthreads = 3\n";
        let (threads, o) = run(text, &["serve", "--config", "FILE"]).unwrap();
        assert_eq!(threads, 3);
        assert_eq!(o.capture, "hw:1,0");
        assert_eq!(o.onset, 5);
        assert_eq!(o.level, -30.5);
        assert_eq!(o.mode, Mode::Off);
        assert!(o.quiet);
        assert_eq!(o.keep, ["a", "b"]);
    }

    #[test]
    fn comments_blank_lines_and_quotes() {
        let text = "# the devices\n\n   \n  # indented comment\ncapture = \"plughw:CARD=Device,DEV=0\"\n\
                    # onset = 9\nquiet = false\n";
        let (_, o) = run(text, &["serve", "--config=FILE"]).unwrap();
        assert_eq!(o.capture, "plughw:CARD=Device,DEV=0");
        assert_eq!(o.onset, 2, "a commented-out key leaves the default");
        assert!(!o.quiet);
        // `#` after a value is part of it (no trailing comments)
        let (_, o) = run("capture = a # b\n", &["serve", "--config", "FILE"]).unwrap();
        assert_eq!(o.capture, "a # b");
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let text = "capture = file\nonset = 5\nthreads = 3\nkeep = f\n";
        // before and after --config, global option before the subcommand, `=` form
        let args = [
            "--threads",
            "7",
            "serve",
            "--onset=9",
            "--config",
            "FILE",
            "--capture",
            "cli",
            "--keep",
            "c",
        ];
        let (threads, o) = run(text, &args).unwrap();
        assert_eq!(threads, 7);
        assert_eq!(o.capture, "cli");
        assert_eq!(o.onset, 9);
        assert_eq!(
            o.keep,
            ["c"],
            "a list on the command line replaces the file's"
        );
        // what the command line leaves unset still comes from the file
        let (threads, o) = run(text, &["serve", "--config", "FILE", "--onset", "1"]).unwrap();
        assert_eq!((threads, o.onset, o.capture.as_str()), (3, 1, "file"));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("capture = x\n\nvad-treshold = 3\n");
        assert!(
            e.contains("serve.conf:3: unknown key `vad-treshold`"),
            "{e}"
        );
        assert!(
            e.contains("capture, onset, level, mode, quiet, keep"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        // the option's id (underscores) is not a key, nor is --help or --config
        for k in ["capture_x", "help", "config"] {
            let e = err(&format!("{k} = 1\n"));
            assert!(e.contains(&format!(":1: unknown key `{k}`")), "{e}");
        }
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let e = err("capture = x\nonset = many\n");
        assert!(
            e.contains("serve.conf:2: `onset`: invalid value 'many'"),
            "{e}"
        );
        let e = err("mode = maybe\n");
        assert!(e.contains(":1: `mode`: invalid value 'maybe'"), "{e}");
        assert!(e.contains("on, off"), "lists the possible values: {e}");
        let e = err("quiet = yes\n");
        assert!(e.contains(":1: `quiet` is a flag"), "{e}");
        let e = err("threads = -1\n");
        assert!(e.contains(":1: `threads`"), "{e}");
        let e = err("capture = x\nonset = 1\nonset = 2\n");
        assert!(e.contains(":3: `onset` is already set on line 2"), "{e}");
        let e = err("capture\n");
        assert!(e.contains(":1: expected `key = value`"), "{e}");
        let e = err("capture =\n");
        assert!(e.contains(":1: no value for `capture`"), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_error_and_no_config_changes_nothing() {
        let argv: Vec<OsString> = ["edgecsm", "serve", "--config", "/nonexistent/serve.conf"]
            .map(OsString::from)
            .to_vec();
        let e = expand(&Cli::command(), argv).unwrap_err();
        assert!(
            e.starts_with("cannot read the options file /nonexistent/serve.conf:"),
            "{e}"
        );
        for argv in [
            &["edgecsm", "serve", "--capture", "x"][..],
            &["edgecsm", "other"],
            &["edgecsm", "--help"],
            &["edgecsm"],
        ] {
            let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
            assert_eq!(expand(&Cli::command(), argv.clone()).unwrap(), argv);
        }
    }

    /// The configuration file the Debian package installs as /etc/edgecsm/serve.conf.
    const SHIPPED: &str = include_str!("../../cross/deb/serve.conf");

    /// `edgecsm serve`, built (with the global options).
    fn serve() -> Command {
        let mut cmd = crate::Cli::command();
        cmd.build();
        cmd.find_subcommand("serve").unwrap().clone()
    }

    /// The `# key = value` lines of the shipped file whose key is one of serve's.
    fn commented_out(sub: &Command) -> Vec<(String, String)> {
        let keys = keys(sub);
        SHIPPED
            .lines()
            .filter_map(|l| l.strip_prefix('#')?.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .collect()
    }

    #[test]
    fn the_shipped_serve_conf_is_valid_and_starts_serve() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.conf");
        std::fs::write(&file, SHIPPED).unwrap();
        let argv = vec![
            "edgecsm".into(),
            "serve".into(),
            "--config".into(),
            file.into(),
        ];
        let full = expand(&crate::Cli::command(), argv).unwrap();
        let cli = crate::Cli::try_parse_from(full).unwrap();
        assert_eq!(cli.threads, 3);
        let crate::Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.socket, Path::new("/run/edgecsm/edgecsm.sock"));
        assert_eq!(a.model, Path::new("/var/lib/edgecsm/models/csm-1b"));
        assert_eq!(
            (a.capture.as_str(), a.playback.as_str()),
            ("default", "default")
        );
    }

    #[test]
    fn the_shipped_serve_conf_lists_every_option_with_its_default() {
        let sub = serve();
        let set: Vec<&str> = SHIPPED
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| Some(l.split_once('=')?.0.trim()))
            .collect();
        let commented = commented_out(&sub);
        for key in keys(&sub) {
            assert!(
                set.contains(&key) || commented.iter().any(|(k, _)| k == key),
                "cross/deb/serve.conf does not mention `{key}`: add `# {key} = DEFAULT` to it"
            );
        }
        for (key, value) in &commented {
            let arg = sub
                .get_arguments()
                .find(|a| a.get_long() == Some(key))
                .unwrap();
            let default: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect();
            assert_eq!(
                [value.as_str()][..],
                default[..],
                "cross/deb/serve.conf says `# {key} = {value}`: not serve's default"
            );
        }
    }

    #[test]
    fn options_go_before_a_double_dash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c");
        std::fs::write(&file, "onset = 4\n").unwrap();
        let argv: Vec<OsString> = vec![
            "edgecsm".into(),
            "serve".into(),
            "--config".into(),
            file.clone().into(),
            "--".into(),
            "rest".into(),
        ];
        let got = expand(&Cli::command(), argv).unwrap();
        assert_eq!(got[4], "--onset=4");
        assert_eq!(got[5], "--");
    }
}
