//! Memory-mapped safetensors weights (filled in by the weights work).
