#!/usr/bin/env python3
"""Per-frame time of transformers' CsmForConditionalGeneration on the CPU at the csm-1b size:
the PyTorch twin of `tools/bench-real.sh`'s `generate` rows and of benches/csm.rs.

Builds `CsmForConditionalGeneration(CsmConfig())` (exactly csm-1b's shapes, 1.65 B parameters
with its Mimi codec) with random weights (nothing is downloaded), in f32, and times a sampled
`generate` (temperature 0.9, top-k 50 for both stages, as the original generator) of --frames
frames after a 20-token prompt, and of a single frame after 31- and 95-token prompts for the
prefill rate (difference of the two). Prints one Markdown row per thread count, in the same
words as bench-real.sh.

    /path/to/venv/bin/python tools/bench_csm_torch.py [--threads 1] [--frames 6]
"""

import argparse
import time

import torch
from transformers import CsmConfig, CsmForConditionalGeneration


def prompt(n, cfg):
    # bos, text ids, eos: any ids below the text vocabulary do for timing
    ids = [cfg.bos_token_id] + [(i * 37 + 11) % 470 for i in range(n - 2)] + [128001]
    return torch.tensor([ids])


def timed_generate(model, ids, frames):
    t0 = time.perf_counter()
    model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=frames,
        do_sample=True,
        temperature=0.9,
        top_k=50,
        depth_decoder_do_sample=True,
        depth_decoder_temperature=0.9,
        depth_decoder_top_k=50,
    )
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CsmConfig()
    model = CsmForConditionalGeneration(cfg).eval()
    with torch.inference_mode():
        timed_generate(model, prompt(20, cfg), 2)  # warm-up
        one = timed_generate(model, prompt(20, cfg), 1)
        many = timed_generate(model, prompt(20, cfg), args.frames)
        p31 = timed_generate(model, prompt(31, cfg), 1)
        p95 = timed_generate(model, prompt(95, cfg), 1)
    per_frame = (many - one) / (args.frames - 1)
    print(f"| torch generate ({args.frames} frames, f32, torch {torch.__version__}) | "
          f"{args.threads} | nothing | {per_frame * 1e3:.0f} ms/frame; prefill "
          f"{64 / (p95 - p31):.1f} tokens/s |", flush=True)


if __name__ == "__main__":
    main()
