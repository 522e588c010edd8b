//! Helpers shared by the integration tests.

use std::process::Command;

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
