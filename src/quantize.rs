//! `edgecsm quantize` (filled in by the weights work).
