#!/usr/bin/env python3
"""Real-time factor of transformers' MimiModel on the CPU, the reference for benches/mimi.rs.

Builds the full kyutai/mimi configuration (`MimiConfig()` defaults: 512 hidden, 64 filters,
ratios [8, 6, 5, 4], 8 + 8 transformer layers, 32 quantizers x 2048 x 256) with random weights
(nothing is downloaded), and times `encode` (all 32 codebooks) and `decode` of the same clip of
deterministic noise-like audio for each thread count. RTF = processing time / audio duration;
each number is the median of --reps runs after one warm-up run. The table has the same columns
as `cargo bench --bench mimi`, so the two can be compared row by row.

    /work/venv/bin/python tools/bench_mimi_torch.py [--seconds 10] [--threads 1 2] [--reps 3]
"""

import argparse
import statistics
import time

import torch
from transformers import MimiConfig, MimiModel


def median_time(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="audio length")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = MimiConfig()
    model = MimiModel(cfg).eval()
    sr = cfg.sampling_rate
    n = int(round(args.seconds * sr))
    t = torch.arange(n, dtype=torch.float32) / sr
    audio = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(n)).reshape(1, 1, n)
    duration = n / sr

    print(f"# transformers MimiModel, torch {torch.__version__}, {args.seconds:g} s audio, "
          f"{cfg.num_quantizers} codebooks, median of {args.reps}")
    print(f"| {'impl':<8} | {'weights':<7} | {'threads':>7} | {'mode':<9} | "
          f"{'encode RTF':>10} | {'decode RTF':>10} | {'enc+dec RTF':>11} |")
    print(f"|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 12}|{'-' * 12}|{'-' * 13}|")
    with torch.inference_mode():
        codes = model.encode(audio).audio_codes
        for threads in args.threads:
            torch.set_num_threads(threads)
            enc = median_time(lambda: model.encode(audio), args.reps) / duration
            dec = median_time(lambda: model.decode(codes), args.reps) / duration
            print(f"| {'torch':<8} | {'f32':<7} | {threads:>7} | {'batch':<9} | "
                  f"{enc:>10.4f} | {dec:>10.4f} | {enc + dec:>11.4f} |", flush=True)


if __name__ == "__main__":
    main()
