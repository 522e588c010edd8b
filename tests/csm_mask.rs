//! `InvalidCodes::Mask`: the bundled random model readily draws the audio vocabulary's extra
//! ids (which the codec cannot decode) when they are allowed, and never when they are masked.

use edgecsm::csm::prompt::{PromptFormatter, Turn};
use edgecsm::csm::{Conversation, Csm, GenerateOptions, InvalidCodes, Segment};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

/// Largest code drawn in `frames` sampled frames with `invalid` handling, over a few seeds.
fn max_code(csm: &Arc<Csm>, ids: &[u32], invalid: InvalidCodes) -> u32 {
    let mut max = 0;
    for seed in 0..4 {
        let mut conv = Conversation::new(csm.clone());
        let mut opts = GenerateOptions::sampled(40, seed);
        opts.invalid_codes = invalid;
        conv.generate(Segment::new("t", ids.to_vec(), vec![]), &opts, |f| {
            max = max.max(*f.iter().max().unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    max
}

#[test]
fn masked_sampling_never_draws_undecodable_codes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/csm-tiny");
    let csm = Arc::new(Csm::load(&dir).unwrap());
    let fmt = PromptFormatter::from_file(dir.join("tokenizer.json")).unwrap();
    let ids = fmt
        .conversation(&[Turn {
            speaker: 0,
            text: "Hello there.",
            audio_frames: None,
        }])
        .unwrap();
    let limit = csm.decodable_limit();
    let kept = max_code(&csm, &ids, InvalidCodes::Keep);
    assert!(
        kept >= limit,
        "the test model should draw an extra id when allowed (max {kept}, limit {limit})"
    );
    let masked = max_code(&csm, &ids, InvalidCodes::Mask);
    assert!(
        masked < limit,
        "masked sampling drew code {masked} >= {limit}"
    );
}
