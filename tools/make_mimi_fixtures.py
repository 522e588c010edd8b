#!/usr/bin/env python3
"""Build tiny random Mimi codecs and their reference outputs for the Rust parity tests.

Developer tool, not a CI step. Needs the packages in tools/requirements.txt (see tools/README.md).

For every tiny config below this script:
  1. builds a `MimiModel` with seeded random weights (every tensor re-drawn so that layer scales,
     LayerNorm affine parameters and attention are far from their trivial init values),
  2. sets each RVQ level's codewords by k-means on that level's real residuals over a long sample
     signal (so codes are diverse), with non-trivial `cluster_usage` (the port must divide) and
     one codeword whose usage is below the 1e-5 clamp,
  3. saves it with `save_pretrained`, reloads it from disk (no cached codebook survives), and
  4. writes, per input waveform, the reference codes, decoded audio and intermediate tensors as
     .npy files, plus the nearest-codeword margins, a streaming-encode check and an f64 run.

Usage: python tools/make_mimi_fixtures.py [--out tests/fixtures/mimi]
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import MimiConfig, MimiModel

# Every field the published kyutai/mimi config uses is kept at its real value except sizes.
REAL = dict(
    sampling_rate=24000,
    audio_channels=1,
    kernel_size=7,
    last_kernel_size=3,
    residual_kernel_size=3,
    dilation_growth_rate=2,
    use_causal_conv=True,
    pad_mode="constant",
    compress=2,
    trim_right_ratio=1.0,
    use_conv_shortcut=False,
    hidden_act="gelu",
    norm_eps=1e-5,
    use_cache=False,
    use_streaming=False,
    attention_bias=False,
    attention_dropout=0.0,
    layer_scale_initial_scale=0.01,
    max_position_embeddings=8000,
    initializer_range=0.02,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)

CONFIGS = {
    # Scaled-down strides (96-sample frames), head_dim 8, a window of 8 transformer steps
    # (4 frames) inside 7-12-frame inputs, 1 semantic + 3 acoustic levels of 64 codewords.
    "a": dict(
        upsampling_ratios=[4, 3, 2, 2],
        num_filters=4,
        num_residual_layers=1,
        hidden_size=32,
        upsample_groups=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        sliding_window=8,
        num_quantizers=4,
        num_semantic_quantizers=1,
        codebook_size=64,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
    ),
    # The real strides (1920-sample frames), odd channel counts (3, 6, 12, 24, 48; residual
    # branches dim // 2), two residual blocks per stage (dilations 1 and 2), head_dim 12, three
    # transformer layers, window 5, two semantic + six acoustic levels of 16 codewords.
    "b": dict(
        upsampling_ratios=[8, 6, 5, 4],
        num_filters=3,
        num_residual_layers=2,
        hidden_size=24,
        upsample_groups=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=40,
        sliding_window=5,
        num_quantizers=8,
        num_semantic_quantizers=2,
        codebook_size=16,
        codebook_dim=12,
        vector_quantization_hidden_dimension=12,
    ),
}

SEEDS = {"a": 1234, "b": 5678}
# (name, number of frames, extra samples beyond whole frames)
INPUTS = {
    "a": [("chirp", 10, 0), ("noise", 12, 0), ("partial", 7, 37)],
    "b": [("chirp", 7, 0), ("partial", 6, 1001)],
}
MIN_MARGIN = 1e-3  # required best-vs-second squared-distance gap for every (frame, level)
USAGE_EPS = 1e-5
FEW_FRAMES = 6  # frames of the random codes decoded with only n_semantic + 1 codebooks  # MimiEuclideanCodebook's clamp


def make_config(name):
    cfg = MimiConfig(**REAL, **CONFIGS[name])
    cfg._attn_implementation = "eager"
    return cfg


def reinit_weights(model, gen):
    """Re-draw every parameter: scales chosen so each stage's activations stay O(1)."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("layer_scale.scale"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.6 + 0.2)
            elif "layernorm" in pname and pname.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "layernorm" in pname and pname.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif pname.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 3:
                conv = model.get_submodule(pname.rsplit(".", 1)[0])
                if isinstance(conv, torch.nn.ConvTranspose1d):
                    # weight [in, out/groups, k]: each output sample sees in/groups * k/stride taps
                    fan_in = p.shape[0] / conv.groups * p.shape[2] / conv.stride[0]
                else:  # weight [out, in/groups, k]
                    fan_in = p.shape[1] * p.shape[2]
                p.copy_(torch.randn(p.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            elif p.dim() == 2:  # linear [out, in]
                gain = 2.0 if any(s in pname for s in ("q_proj", "k_proj")) else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(p.shape[1]))
            else:
                raise RuntimeError(f"unexpected parameter {pname} {tuple(p.shape)}")


def conv_targets(model):
    """Target output RMS for each conv when normalising (data-dependent, LSUV-like)."""
    targets = {}
    for mname, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            t = 1.0
            if ".block.3." in mname + ".":  # last conv of a residual branch
                t = 0.5
            if "input_proj" in mname:  # quantizer space: large enough for clear code margins
                t = 4.0
            targets[mname] = (m, t)
    last = [k for k in targets if k.startswith("decoder.decoder_seanet.")][-1]
    targets[last] = (targets[last][0], 0.3)  # audio-like output level
    return targets


@torch.no_grad()
def normalise(model, prefixes, run):
    """Run once with hooks that rescale each matching conv (weight and bias) to its target RMS.

    Hooks see the convs in forward order and return the rescaled output, so later layers are
    normalised on already-normalised inputs.
    """
    handles = []
    for mname, (m, target) in conv_targets(model).items():
        if not mname.startswith(prefixes):
            continue

        def hook(mod, inp, out, target=target):
            s = target / float(out.pow(2).mean().sqrt())
            mod.weight.mul_(s)
            if mod.bias is not None:
                mod.bias.mul_(s)
            return out * s

        handles.append(m.register_forward_hook(hook))
    run()
    for h in handles:
        h.remove()


def make_signal(kind, n, sr, gen):
    t = torch.arange(n, dtype=torch.float64) / sr
    if kind == "noise":
        x = 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
        x += 0.2 * torch.sin(2 * math.pi * 440 * t)
    else:  # chirp 100 Hz -> 6 kHz with noise and an amplitude envelope
        f0, f1 = 100.0, 6000.0
        dur = n / sr
        phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
        env = 0.5 + 0.4 * torch.sin(2 * math.pi * 3.0 * t / dur)
        x = env * torch.sin(phase) + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x.float()


def sample_signal(n, sr, gen):
    """Long varied signal for the codebook k-means: chirps, tones, noise bursts."""
    parts = []
    left = n
    while left > 0:
        m = min(left, int(sr * 0.05) + int(torch.randint(0, int(sr * 0.1), (1,), generator=gen)))
        kind = ["chirp", "noise"][int(torch.randint(0, 2, (1,), generator=gen))]
        parts.append(make_signal(kind, m, sr, gen) * float(torch.rand(1, generator=gen) * 1.5 + 0.2))
        left -= m
    return torch.cat(parts)


def kmeans(x, k, gen, iters=25):
    """x: [N, D] f64. Plain Lloyd iterations from a random subset; empty clusters re-seeded."""
    idx = torch.randperm(x.shape[0], generator=gen)[:k]
    c = x[idx].clone()
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)
        for j in range(k):
            m = a == j
            if m.any():
                c[j] = x[m].mean(0)
            else:
                c[j] = x[int(torch.randint(0, x.shape[0], (1,), generator=gen))]
    return c


@torch.no_grad()
def init_codebooks(model, cfg, gen, frame_size):
    n = frame_size * max(400, 6 * cfg.codebook_size)
    sig = sample_signal(n, cfg.sampling_rate, gen)[None, None]
    q = model.quantizer
    normalise(model, ("encoder.",), lambda: model.encoder(sig))
    latents = model.encoder(sig).latents  # [1, hidden, T]
    groups = (q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer)
    normalise(model, ("quantizer.",), lambda: [g.input_proj(latents) for g in groups])
    for group in (q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer):
        res = group.input_proj(latents)[0].T.double()  # [T, D]
        for layer in group.layers:
            cb = layer.codebook
            cent = kmeans(res, cfg.codebook_size, gen)
            usage = torch.rand(cfg.codebook_size, generator=gen, dtype=torch.float64) * 3.0 + 0.5
            # One codeword below the clamp: its codeword is embed_sum / 1e-5, not / usage.
            usage[cfg.codebook_size - 1] = 1e-7
            scale = usage.clamp(min=USAGE_EPS)
            cb.embed_sum.copy_((cent * scale[:, None]).float())
            cb.cluster_usage.copy_(usage.float())
            cb._embed = None
            emb = cb.embed.double()
            res = res - emb[torch.cdist(res, emb).argmin(1)]
    codes = model.encode(sig).audio_codes
    normalise(model, ("quantizer.", "decoder."), lambda: model.decode(codes))


def to_np(t):
    return t.detach().cpu().numpy()


@torch.no_grad()
def margins_and_check(model, latents, codes):
    """Per (frame, level): best vs second-best squared distance (f64), and argmin == code."""
    q = model.quantizer
    n_sem = q.num_semantic_quantizers
    out = []
    for group, rows in (
        (q.semantic_residual_vector_quantizer, range(0, n_sem)),
        (q.acoustic_residual_vector_quantizer, range(n_sem, codes.shape[0])),
    ):
        res = group.input_proj(latents)[0].T  # f32, as the reference computes it
        for layer, row in zip(group.layers, rows):
            emb = layer.codebook.embed
            d2 = ((res.double()[:, None, :] - emb.double()[None]) ** 2).sum(-1)
            s, i = d2.sort(1)
            if not torch.equal(i[:, 0], codes[row]):
                raise RuntimeError(f"f64 argmin disagrees with the reference codes at level {row}")
            out.append(s[:, 1] - s[:, 0])
            res = res - emb[codes[row]]
    return torch.stack(out)  # [n_q, T]


@torch.no_grad()
def reference(model, x, cfg):
    """One-shot encode/decode plus every intermediate, with the model's own modules."""
    enc, dec, q = model.encoder, model.decoder, model.quantizer
    xin = x[None, None]
    seanet = enc.encoder_seanet(xin)  # [1, hidden, T25]
    etr = enc.encoder_transformer(seanet.transpose(1, 2)).last_hidden_state  # [1, T25, hidden]
    lat = enc.downsample(etr.transpose(1, 2))  # [1, hidden, T]
    codes = model.encode(xin).audio_codes[0]  # [n_q, T]
    lat2 = enc(xin).latents
    assert torch.equal(lat, lat2), "step-by-step latents differ from MimiEncoderModel"
    quant = q.decode(codes[None])  # [1, hidden, T]
    up = dec.upsample(quant)  # [1, hidden, T25]
    dtr = dec.decoder_transformer(up.transpose(1, 2)).last_hidden_state  # [1, T25, hidden]
    audio = dec.decoder_seanet(dtr.transpose(1, 2))  # [1, 1, samples]
    audio2 = model.decode(codes[None]).audio_values
    assert torch.equal(audio, audio2), "step-by-step audio differs from MimiModel.decode"
    return dict(
        input=x,
        codes=codes,
        seanet_out=seanet[0],
        encoder_transformer_out=etr[0],
        latents=lat[0],
        quantized=quant[0],
        upsampled=up[0],
        decoder_transformer_out=dtr[0],
        decoded=audio[0, 0],
    )


@torch.no_grad()
def streaming_codes(model, x, frame_size, frames_per_chunk):
    ec, pc, out = None, None, []
    n = x.shape[0] // frame_size
    for s in range(0, n, frames_per_chunk):
        chunk = x[s * frame_size : min(n, s + frames_per_chunk) * frame_size]
        o = model.encode(chunk[None, None], encoder_cache=ec, padding_cache=pc, use_streaming=True)
        ec, pc = o.encoder_cache, o.padding_cache
        out.append(o.audio_codes[0])
    return torch.cat(out, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/mimi"))
    args = ap.parse_args()
    root = Path(args.out)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    versions = dict(
        python=sys.version.split()[0],
        torch=torch.__version__,
        transformers=transformers.__version__,
        numpy=np.__version__,
    )
    summary = {"versions": versions, "configs": {}}
    for name, cfg_fields in CONFIGS.items():
        seed = SEEDS[name]
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        cfg = make_config(name)
        model = MimiModel(cfg).eval()
        reinit_weights(model, gen)
        frame_size = cfg.frame_size
        init_codebooks(model, cfg, gen, frame_size)

        d = root / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        model.save_pretrained(d)
        for extra in ("generation_config.json",):
            (d / extra).unlink(missing_ok=True)
        # Reload from disk: the references come from exactly what the Rust side will read.
        model = MimiModel.from_pretrained(d, attn_implementation="eager").eval()
        model64 = MimiModel.from_pretrained(d, attn_implementation="eager", dtype=torch.float64).eval()
        model_sdpa = MimiModel.from_pretrained(d, attn_implementation="sdpa").eval()
        wide = MimiConfig.from_pretrained(d)
        wide.sliding_window = 1 << 20
        model_wide = MimiModel.from_pretrained(d, config=wide, attn_implementation="eager").eval()

        info = dict(
            seed=seed,
            frame_size=frame_size,
            frame_rate=cfg.frame_rate,
            encodec_frame_rate=cfg.encodec_frame_rate,
            latent_stride=cfg.latent_stride,
            inputs={},
        )
        for iname, frames, extra in INPUTS[name]:
            n = frames * frame_size + extra
            kind = "noise" if iname == "noise" else "chirp"
            x = make_signal(kind, n, cfg.sampling_rate, gen)
            ref = reference(model, x, cfg)
            codes = ref["codes"]
            margins = margins_and_check(model, ref["latents"][None], codes)
            # distinct codes per level
            distinct = [len(set(r.tolist())) for r in codes]
            # fewer quantizers: the first k rows of the full codes
            fewer = {}
            for k in range(cfg.num_semantic_quantizers, cfg.num_quantizers):
                ck = model.encode(x[None, None], num_quantizers=k).audio_codes[0]
                fewer[k] = bool(torch.equal(ck, codes[:k]))
            with torch.no_grad():
                sdpa_equal = bool(torch.equal(model_sdpa.encode(x[None, None]).audio_codes[0], codes))
                wide_codes = model_wide.encode(x[None, None]).audio_codes[0]
                wide_audio = model_wide.decode(codes[None]).audio_values[0, 0]
            # f64
            ref64 = reference(model64, x.double(), cfg)
            codes_equal_f64 = bool(torch.equal(ref64["codes"], codes))
            dec64 = ref64["decoded"]
            rel64 = float((ref["decoded"].double() - dec64).abs().max() / dec64.abs().max())
            lat_rel64 = float(
                (ref["latents"].double() - ref64["latents"]).abs().max() / ref64["latents"].abs().max()
            )
            # streaming (whole frames only)
            stream = {}
            if extra == 0:
                for fpc in (1, 2):
                    stream[f"{fpc}_frame_chunks_equal_one_shot"] = bool(
                        torch.equal(streaming_codes(model, x, frame_size, fpc), codes)
                    )
            info["inputs"][iname] = dict(
                samples=n,
                frames=int(codes.shape[1]),
                encoded_length=int(model.get_encoded_length(torch.tensor(n))),
                decoded_samples=int(ref["decoded"].shape[0]),
                min_margin=float(margins.min()),
                distinct_codes_per_level=distinct,
                fewer_quantizers_prefix_equal=fewer,
                f64_codes_equal=codes_equal_f64,
                f64_decoded_max_rel_diff=rel64,
                f64_latents_max_rel_diff=lat_rel64,
                streaming=stream,
                sdpa_codes_equal=sdpa_equal,
                no_window_codes_differing=int((wide_codes != codes).sum()),
                no_window_decoded_max_abs_diff=float((wide_audio - ref["decoded"]).abs().max()),
                rms={k: float(v.float().pow(2).mean().sqrt()) for k, v in ref.items() if k != "codes"},
            )
            if margins.min() < MIN_MARGIN:
                raise RuntimeError(f"{name}/{iname}: near-tie, min margin {float(margins.min()):.3g}")
            if not codes_equal_f64:
                raise RuntimeError(f"{name}/{iname}: f32 and f64 codes differ")
            for k, v in ref.items():
                arr = to_np(v)
                arr = arr.astype(np.int64) if k == "codes" else arr.astype(np.float32)
                np.save(d / f"{iname}.{k}.npy", arr)
            np.save(d / f"{iname}.margins.npy", to_np(margins).astype(np.float32))
        # Decode-only: random codes covering every codeword (incl. the clamped one) of every level.
        t = cfg.codebook_size
        rc = torch.stack(
            [torch.randperm(cfg.codebook_size, generator=gen)[:t] for _ in range(cfg.num_quantizers)]
        )
        rc = torch.cat([rc, torch.randint(0, cfg.codebook_size, (cfg.num_quantizers, 3), generator=gen)], 1)
        rc[:, 0] = cfg.codebook_size - 1
        with torch.no_grad():
            rdec = model.decode(rc[None]).audio_values[0, 0]
            rdec_few = model.decode(rc[None, : cfg.num_semantic_quantizers + 1, :FEW_FRAMES]).audio_values[0, 0]
            rq = model.quantizer.decode(rc[None])[0]
        np.save(d / "random.codes.npy", to_np(rc).astype(np.int64))
        np.save(d / "random.quantized.npy", to_np(rq).astype(np.float32))
        np.save(d / "random.decoded.npy", to_np(rdec).astype(np.float32))
        np.save(d / f"random.decoded_first{cfg.num_semantic_quantizers + 1}.npy", to_np(rdec_few).astype(np.float32))
        info["random_codes_frames"] = int(rc.shape[1])
        info["tensors"] = {}
        from safetensors import safe_open

        with safe_open(d / "model.safetensors", "np") as f:
            for k in sorted(f.keys()):
                info["tensors"][k] = list(f.get_slice(k).get_shape())
        summary["configs"][name] = info
        print(json.dumps({k: v for k, v in info.items() if k != "tensors"}, indent=1))
    with open(root / "summary.json", "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
