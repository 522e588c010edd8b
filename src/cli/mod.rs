//! The subcommands of the `edgecsm` binary that outgrew `main.rs`, one file each.

#[cfg(feature = "alsa")]
pub mod alloc_count;
pub mod audio;
pub mod decode;
pub mod encode;
pub mod generate;
pub mod logger;
pub mod options_file;
pub mod say;
pub mod serve;
pub mod synth;

use edgecsm::Result;
use edgecsm::csm::CsmConfig;
use edgecsm::csm::model::CODEC_PREFIX;
use edgecsm::kernels::Pool;
use edgecsm::mimi::{Mimi, MimiConfig};
use edgecsm::weights::Weights;
use std::path::Path;
use std::sync::Arc;

/// Whether `dir/config.json` describes a CSM checkpoint (`"model_type": "csm"`), whose Mimi
/// codec is nested under `codec_config` / `codec_model.`. An unreadable config is "no": the
/// Mimi loader then reports what is wrong with it.
fn is_csm_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("model_type").and_then(|m| m.as_str()) == Some("csm"))
}

/// The codec configuration of a model directory: a Mimi checkpoint, or a CSM checkpoint
/// (the codec of which is `codec_config`).
pub fn codec_config(dir: &Path) -> Result<MimiConfig> {
    let path = dir.join("config.json");
    if is_csm_dir(dir) {
        Ok(CsmConfig::load(&path)?.codec)
    } else {
        MimiConfig::load(&path)
    }
}

/// Loads the codec in `dir` (a Mimi checkpoint, or the codec nested in a CSM checkpoint)
/// computing on `threads` threads (0 = one per core).
pub fn load_mimi(dir: &Path, threads: usize) -> Result<Mimi> {
    let mut mimi = if is_csm_dir(dir) {
        let cfg = codec_config(dir)?;
        Mimi::from_weights(cfg, &Weights::open(dir)?.with_prefix(CODEC_PREFIX))?
    } else {
        Mimi::load(dir)?
    };
    mimi.set_pool(Arc::new(Pool::new(threads)));
    Ok(mimi)
}
