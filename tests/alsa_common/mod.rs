//! A private PulseAudio with null sinks for real-time ALSA tests (through the ALSA `pulse`
//! plugin), started by the test and killed by its PID when dropped. Nothing outside its
//! temporary directory is touched; nothing is left running.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SETUP: &str = "run tools/audio-test-setup.sh --packages (as root, or with sudo) to \
                     install the audio test packages (pulseaudio, pulseaudio-utils, \
                     libasound2-plugins)";

/// A running private PulseAudio daemon with one null sink per name, each reachable as an ALSA
/// PCM of the same name that plays into the sink and captures from its monitor (a loopback).
pub struct Pulse {
    daemon: Option<Child>,
    helpers: Vec<Child>,
    sinks: Vec<String>,
    dir: tempfile::TempDir,
}

fn require(program: &str) {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => panic!("`{program}` cannot be run ({e}): {SETUP}"),
    }
}

fn alsa_pulse_plugin_installed() -> bool {
    ["/usr/lib", "/usr/lib64"].iter().any(|root| {
        std::fs::read_dir(root).is_ok_and(|dirs| {
            dirs.flatten().any(|d| {
                d.path()
                    .join("alsa-lib/libasound_module_pcm_pulse.so")
                    .exists()
            })
        })
    })
}

impl Pulse {
    /// Starts the daemon (rate 24 kHz, mono, s16) with `sinks`, keeps every monitor busy with a
    /// low-latency reader (an idle null sink renders in ~2 s blocks and stalls new streams)
    /// and reads from each once. Panics with set-up instructions when a package is missing.
    pub fn start(sinks: &[&str]) -> Pulse {
        require("pulseaudio");
        require("pacat");
        assert!(
            alsa_pulse_plugin_installed(),
            "the ALSA pulse plugin (libasound2-plugins) is not installed: {SETUP}"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let run = dir.path().join("run");
        for d in ["run/pulse", "state", "home", "config/alsa"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        for d in [run.clone(), run.join("pulse")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let socket = run.join("pulse/native");
        let mut conf = String::new();
        for s in sinks {
            let srv = socket.display();
            conf += &format!(
                "pcm.{s} {{\n  type asym\n  playback.pcm {{ type pulse server \"unix:{srv}\" \
                 device \"{s}\" }}\n  capture.pcm {{ type pulse server \"unix:{srv}\" device \
                 \"{s}.monitor\" }}\n}}\n"
            );
        }
        std::fs::write(dir.path().join("config/alsa/asoundrc"), conf).unwrap();
        let mut pulse = Pulse {
            daemon: None,
            helpers: Vec::new(),
            sinks: sinks.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        pulse.launch();
        pulse
    }

    /// Kills the daemon (as a crashed or restarted sound server goes away: clients see their
    /// streams fail) and waits until it is gone.
    pub fn kill(&mut self) {
        // by PID, helpers first, then the daemon
        for c in self.helpers.iter_mut().chain(self.daemon.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.helpers.clear();
        self.daemon = None;
    }

    /// Kills the daemon and starts a new one with the same sinks, socket and ALSA names.
    #[allow(dead_code)] // not every test that shares this module restarts the server
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Starts the daemon in this directory, and its monitor readers.
    fn launch(&mut self) {
        let run = self.dir.path().join("run");
        let socket = run.join("pulse/native");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new("pulseaudio");
        cmd.args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
        ])
        .arg(format!(
            "--log-target=file:{}",
            self.dir.path().join("pulse.log").display()
        ))
        .arg("-L")
        .arg(format!(
            "module-native-protocol-unix auth-anonymous=1 socket={}",
            socket.display()
        ));
        for s in &self.sinks {
            cmd.arg("-L").arg(format!(
                "module-null-sink sink_name={s} rate=24000 channels=1 format=s16le"
            ));
        }
        let env = Self::env_of(self.dir.path());
        let mut daemon = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HOME", self.dir.path().join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pulseaudio ({e}): {SETUP}"));
        let t0 = Instant::now();
        while !socket.exists() {
            if let Ok(Some(st)) = daemon.try_wait() {
                panic!(
                    "pulseaudio exited ({st}); its log: {}",
                    std::fs::read_to_string(self.dir.path().join("pulse.log")).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "pulseaudio did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(daemon);
        let pacat = |s: &str| {
            let mut c = Command::new("pacat");
            c.args(["-r", "-d", &format!("{s}.monitor")])
                .args([
                    "--latency-msec=20",
                    "--rate=24000",
                    "--channels=1",
                    "--format=s16le",
                ])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        for s in &self.sinks {
            let keep = pacat(s).stdout(Stdio::null()).spawn().expect("pacat");
            self.helpers.push(keep);
        }
        for s in &self.sinks {
            // one warm-up read per monitor: 0.1 s of audio
            let mut r = pacat(s).stdout(Stdio::piped()).spawn().expect("pacat");
            let mut buf = vec![0u8; 4800];
            let ok = r.stdout.take().unwrap().read_exact(&mut buf).is_ok();
            let _ = r.kill();
            let _ = r.wait();
            assert!(ok, "no audio from the monitor of sink {s}");
        }
    }

    /// The environment under which ALSA (and libpulse) clients find this daemon and its ALSA
    /// configuration (`$XDG_CONFIG_HOME/alsa/asoundrc`, read by the stock alsa.conf).
    pub fn env(&self) -> Vec<(String, PathBuf)> {
        Self::env_of(self.dir.path())
    }

    fn env_of(dir: &Path) -> Vec<(String, PathBuf)> {
        let run = dir.join("run");
        vec![
            ("XDG_CONFIG_HOME".into(), dir.join("config")),
            ("XDG_RUNTIME_DIR".into(), run.clone()),
            ("PULSE_RUNTIME_PATH".into(), run.join("pulse")),
            ("PULSE_STATE_PATH".into(), dir.join("state")),
            (
                "PULSE_SERVER".into(),
                PathBuf::from(format!("unix:{}", run.join("pulse/native").display())),
            ),
        ]
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        self.kill();
    }
}
