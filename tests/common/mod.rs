//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// The deterministic test-data generator of the unit tests, shared with the integration tests
/// and the benchmarks so that there is one.
#[allow(dead_code)]
#[path = "../../src/kernels/test_rand.rs"]
mod test_rand;
#[allow(unused_imports)] // not every test file draws test data
pub(crate) use test_rand::rand_vec;

/// A command running the `edgecsm` binary built for these tests. Under cross-architecture
/// emulation (`cross/test.sh`) a child process is not emulated automatically, so the binary is
/// started through the runner named by `EDGECSM_TEST_RUNNER` (e.g. `qemu-aarch64-static`).
#[allow(dead_code)] // not every test file uses every helper
pub fn edgecsm() -> Command {
    let bin = env!("CARGO_BIN_EXE_edgecsm");
    match std::env::var("EDGECSM_TEST_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}

/// The repository root (the tests' working directory for the CLI).
#[allow(dead_code)]
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `edgecsm ARGS` in the repository root and collects its output.
#[allow(dead_code)]
pub fn run(args: &[&str]) -> Output {
    edgecsm().args(args).current_dir(repo()).output().unwrap()
}
