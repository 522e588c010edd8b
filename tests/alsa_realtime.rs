//! Real-time ALSA: the loop on a PulseAudio null sink through the ALSA `pulse` plugin (clocked
//! in real time, no sound hardware), in one test function because the allocation counter and
//! the process environment are process-wide:
//! 1. a loopback click: the sink's monitor is the loop's capture, so what it plays comes back;
//!    a click is injected once and echoed (passed through at half gain, while the Mimi round
//!    trip still runs on every frame); the distance between successive echoes in the capture
//!    stream is the loop's mic-to-speaker latency (plus the sink's own monitor path).
//! 2. the `edgecsm loop` pipeline (Mimi encode -> decode) for 64 s: after a 3 s warm-up, no
//!    xrun and no heap allocation on the capture, compute and playback threads (counted by a
//!    global allocator for the threads the loop marks through its thread hook).
//!
//! Needs pulseaudio, pulseaudio-utils and libasound2-plugins: without them the test fails and
//! says to run tools/audio-test-setup.sh. The daemon is private and killed by its PID.
#![cfg(feature = "alsa")]

mod alsa_common;

mod counting_alloc;
use edgecsm::mimi::Mimi;
use edgecsm::stream::{
    self, AlsaCapture, AlsaPlayback, FrameProcessor, MimiRoundTrip, StreamConfig, ThreadRole,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn mark_thread(_: ThreadRole) {
    counting_alloc::mark_current_thread(true);
}

const SINK: &str = "edgecsm_rt";
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mimi-tiny");

/// Click onsets seen in the capture stream (sample positions), shared with the test.
#[derive(Default)]
struct Onsets {
    at: [AtomicU64; 16],
    n: AtomicUsize,
}

/// The Mimi round trip on every frame, but plays the captured frame back at half gain (so a
/// click echoes with a known, decaying amplitude) and injects one click.
struct ClickEcho {
    rt: MimiRoundTrip,
    decoded: Vec<f32>,
    last: Vec<f32>,
    frame: u64,
    click_frame: u64,
    pos: u64,
    quiet: u64,
    onsets: Arc<Onsets>,
}

impl FrameProcessor for ClickEcho {
    fn analyze(&mut self, input: &[f32]) -> edgecsm::Result<()> {
        self.rt.analyze(input)?;
        for &x in input {
            if x.abs() > 0.05 {
                // an onset: loud after at least 50 ms of quiet
                let n = self.onsets.n.load(Ordering::Relaxed);
                if self.quiet > 1200 && n < self.onsets.at.len() {
                    self.onsets.at[n].store(self.pos, Ordering::Relaxed);
                    self.onsets.n.store(n + 1, Ordering::Relaxed);
                }
                self.quiet = 0;
            } else {
                self.quiet += 1;
            }
            self.pos += 1;
        }
        self.last.copy_from_slice(input);
        Ok(())
    }

    fn synthesize(&mut self, output: &mut [f32]) -> edgecsm::Result<()> {
        self.rt.synthesize(&mut self.decoded)?;
        for (o, x) in output.iter_mut().zip(&self.last) {
            *o = 0.5 * x;
        }
        if self.frame == self.click_frame {
            output[..8].fill(0.9);
        }
        self.frame += 1;
        Ok(())
    }
}

fn config(frames: u64) -> StreamConfig {
    StreamConfig {
        frames: Some(frames),
        thread_hook: Some(mark_thread),
        ..StreamConfig::default()
    }
}

fn click_latency(mimi: &Arc<Mimi>) -> f64 {
    let cfg = config(100); // 8 s
    let onsets = Arc::new(Onsets::default());
    let proc = ClickEcho {
        rt: MimiRoundTrip::new(mimi.clone(), mimi.num_quantizers()).unwrap(),
        decoded: vec![0.0; cfg.period],
        last: vec![0.0; cfg.period],
        frame: 0,
        click_frame: 25,
        pos: 0,
        quiet: 0,
        onsets: onsets.clone(),
    };
    let cap = AlsaCapture::open(SINK, &cfg).unwrap();
    let play = AlsaPlayback::open(SINK, &cfg).unwrap();
    let report = stream::start(&cfg, cap, play, proc)
        .unwrap()
        .join()
        .unwrap();
    println!("click run:\n{report}");
    let n = onsets.n.load(Ordering::Relaxed);
    let at: Vec<u64> = onsets.at[..n]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    println!("click onsets in the capture stream (samples): {at:?}");
    assert!(
        n >= 2,
        "the click did not come back through the loop: onsets {at:?}"
    );
    let gaps: Vec<f64> = at
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 * 1000.0 / cfg.rate as f64)
        .collect();
    println!("echo intervals (mic-to-speaker latency per pass), ms: {gaps:?}");
    gaps[0]
}

#[test]
fn realtime_loop_on_pulse_null_sink() {
    // the counter sees allocations of marked threads (so a zero below means something)
    mark_thread(ThreadRole::Compute);
    let before = counting_alloc::marked();
    std::hint::black_box(vec![1u8; 64]);
    assert!(counting_alloc::marked() > before, "allocation counter");
    counting_alloc::mark_current_thread(false);

    let pulse = alsa_common::Pulse::start(&[SINK]);
    for (k, v) in pulse.env() {
        // SAFETY: the only test of this binary sets its environment before it starts any
        // thread of its own (or loads ALSA); the daemon's helpers are other processes.
        unsafe { std::env::set_var(k, v) };
    }
    let mut m = Mimi::load(MODEL).unwrap();
    m.set_pool(Arc::new(edgecsm::kernels::Pool::new(1)));
    let mimi = Arc::new(m);

    let latency_ms = click_latency(&mimi);

    let seconds = 64.0;
    let warm_up = Duration::from_secs(3);
    let cfg = config((seconds * 12.5) as u64);
    let cap = AlsaCapture::open(SINK, &cfg).unwrap();
    let play = AlsaPlayback::open(SINK, &cfg).unwrap();
    let proc = MimiRoundTrip::new(mimi.clone(), mimi.num_quantizers()).unwrap();
    let t0 = Instant::now();
    let running = stream::start(&cfg, cap, play, proc).unwrap();
    std::thread::sleep(warm_up);
    let (allocs0, snap0) = (counting_alloc::marked(), running.stats().snapshot());
    while t0.elapsed() < Duration::from_secs_f64(seconds - 1.0) && !running.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (allocs1, snap1) = (counting_alloc::marked(), running.stats().snapshot());
    let measured = t0.elapsed() - warm_up;
    let report = running.join().unwrap();
    println!("64 s run:\n{report}");
    let (c0, c1) = (snap0.counters, snap1.counters);
    let allocs = allocs1 - allocs0;
    let xruns = c1.xruns() - c0.xruns();
    let late = c1.playback_late - c0.playback_late;
    let dropped = c1.dropped() - c0.dropped();
    println!(
        "after warm-up ({:.1} s, {} frames): {allocs} allocations on the loop's threads, {xruns} \
         xruns, {late} late frames, {dropped} dropped; whole run: {} xruns, {} late, {} dropped",
        measured.as_secs_f64(),
        c1.processed - c0.processed,
        report.stats.counters.xruns(),
        report.stats.counters.playback_late,
        report.stats.counters.dropped()
    );
    println!(
        "loopback click latency {latency_ms:.1} ms; configured bound {:.1} ms",
        report.latency_bound_ms
    );
    assert!(
        measured >= Duration::from_secs(60),
        "measured only {measured:?}"
    );
    assert!(
        c1.processed - c0.processed >= 740,
        "frames processed: {c1:?}"
    );
    assert_eq!(allocs, 0, "heap allocations on the audio/compute threads");
    assert_eq!(xruns, 0, "xruns after warm-up");
    assert_eq!(
        report.stats.counters.processed,
        report.stats.counters.captured
    );
}
