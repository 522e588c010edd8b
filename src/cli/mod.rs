//! The subcommands of the `edgecsm` binary that outgrew `main.rs`, one file each.

#[cfg(feature = "alsa")]
pub mod alloc_count;
pub mod audio;
pub mod decode;
pub mod encode;

use edgecsm::Result;
use edgecsm::kernels::Pool;
use edgecsm::mimi::Mimi;
use std::path::Path;
use std::sync::Arc;

/// Loads the codec in `dir` computing on `threads` threads (0 = one per core).
pub fn load_mimi(dir: &Path, threads: usize) -> Result<Mimi> {
    let mut mimi = Mimi::load(dir)?;
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    if threads > 1 {
        mimi.set_pool(Arc::new(Pool::new(threads)));
    }
    Ok(mimi)
}
