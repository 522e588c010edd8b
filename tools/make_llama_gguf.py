#!/usr/bin/env python3
"""A random-weight llama-architecture GGUF with the shape of the CSM-1B backbone.

The CSM-1B backbone is a Llama-3.2-1B-style decoder: 2048 wide, 16 layers, 32 query heads over
8 key/value heads (head size 64), a SwiGLU feed-forward 8192 wide, RoPE base 500000. Its input
embedding and output head are 2051 rows (codebook 0's audio vocabulary), so the same 2051 rows
are used here for `token_embd` and `output`: the per-token work matches the backbone's.

llama.cpp runs this file as it runs any Llama, so `llama-bench` on it is a peer for edgecsm's
backbone (tools/peer-llamacpp.sh). Weights are N(0, std^2), RMSNorm gains 1; the numbers it
computes mean nothing, only the speed does. The file carries a placeholder SentencePiece-style
vocabulary of the same 2051 entries because llama.cpp's loader needs one (llama-bench draws
random token ids below its size).

Writes f32 or f16; quantize with llama.cpp's own `llama-quantize` (Q8_0, Q4_0, ...). Tensors
are generated and written one at a time (peak memory is one 8192 x 2048 matrix, not the model),
into `OUT.partial`, renamed to OUT only when complete.

    python tools/make_llama_gguf.py --out backbone-f16.gguf [--type f16] [--layers 16]

Needs `gguf` and `numpy` (tools/peer-llamacpp.sh installs both into its own venv).
"""

import argparse
import os
import sys

import numpy as np
import gguf

# CSM-1B backbone dimensions (transformers' CsmConfig for sesame/csm-1b).
EMBD = 2048
LAYERS = 16
HEADS = 32
KV_HEADS = 8
FF = 8192
VOCAB = 2051
ROPE_BASE = 500000.0
NORM_EPS = 1e-5
CONTEXT = 2048


def tensor_plan(layers, vocab):
    """(name, numpy shape) of every tensor in file order; shape is (out, in) for matrices."""
    head = EMBD // HEADS
    kv = KV_HEADS * head
    plan = [("token_embd.weight", (vocab, EMBD))]
    for i in range(layers):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (EMBD,)),
            (b + "attn_q.weight", (HEADS * head, EMBD)),
            (b + "attn_k.weight", (kv, EMBD)),
            (b + "attn_v.weight", (kv, EMBD)),
            (b + "attn_output.weight", (EMBD, HEADS * head)),
            (b + "ffn_norm.weight", (EMBD,)),
            (b + "ffn_gate.weight", (FF, EMBD)),
            (b + "ffn_up.weight", (FF, EMBD)),
            (b + "ffn_down.weight", (EMBD, FF)),
        ]
    plan += [("output_norm.weight", (EMBD,)), ("output.weight", (vocab, EMBD))]
    return plan


def placeholder_vocab(n):
    """<unk> <s> </s>, the 256 byte tokens, then numbered word pieces up to n entries."""
    T = gguf.TokenType
    entries = [("<unk>", T.UNKNOWN), ("<s>", T.CONTROL), ("</s>", T.CONTROL)]
    entries += [("<0x%02X>" % b, T.BYTE) for b in range(256)]
    entries += [("\u2581w%d" % k, T.NORMAL) for k in range(n - len(entries))]
    if len(entries) != n:
        raise SystemExit(f"error: a vocabulary needs at least 259 entries, got --vocab {n}")
    scores = [0.0 if ty != T.NORMAL else -float(i) for i, (_, ty) in enumerate(entries)]
    return [t for t, _ in entries], scores, [int(ty) for _, ty in entries]


def write(path, dtype, layers, vocab, seed, std):
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}[dtype]
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("csm-1b-backbone-shape (random weights)")
    w.add_file_type(int(file_type))
    w.add_context_length(CONTEXT)
    w.add_embedding_length(EMBD)
    w.add_block_count(layers)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(EMBD // HEADS)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(NORM_EPS)
    w.add_vocab_size(vocab)
    tokens, scores, types = placeholder_vocab(vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)

    plan = tensor_plan(layers, vocab)
    for name, shape in plan:
        # norms stay f32 (as llama.cpp's converters write them); matrices take the file's type
        t = np.float32 if len(shape) == 1 else np_dtype
        w.add_tensor_info(name, shape, np.dtype(t), int(np.prod(shape)) * np.dtype(t).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(seed)
    for k, (name, shape) in enumerate(plan):
        if len(shape) == 1:
            a = np.ones(shape, dtype=np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32)
            a *= std
            a = a.astype(np_dtype, copy=False)
        w.write_tensor_data(a)
        if name.endswith("ffn_down.weight") or k == len(plan) - 1:
            print(f"  {name} ({k + 1}/{len(plan)} tensors)", file=sys.stderr, flush=True)
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the .gguf to write")
    ap.add_argument("--type", default="f16", choices=["f16", "f32"])
    ap.add_argument("--layers", type=int, default=LAYERS, help="blocks (16; fewer for a quick check)")
    ap.add_argument("--vocab", type=int, default=VOCAB, help="embedding and head rows (2051)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02)
    a = ap.parse_args()
    if a.layers < 1:
        raise SystemExit(f"error: --layers must be >= 1, got {a.layers}")
    part = a.out + ".partial"
    try:
        write(part, a.type, a.layers, a.vocab, a.seed, a.std)
        os.replace(part, a.out)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e9:.2f} GB)", file=sys.stderr)


if __name__ == "__main__":
    main()
