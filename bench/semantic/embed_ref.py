#!/usr/bin/env python3
"""embed_ref.py — embed the texts of a JSONL data set (fields a, b) with an
independent numpy all-MiniLM-L6-v2 (HF `tokenizers` for WordPiece, numpy for
the 6-layer encoder, mean pooling over real tokens, L2 normalisation) and
write them as little-endian float32 rows: row 2i = a of line i, 2i+1 = b.

Used by bench/semantic/run when no barista server is given (--url): the
barista encoder (POST /v1/embeddings) is the product path; this is the
fallback that lets the guard be tuned and checked without it.

usage: embed_ref.py MODEL_DIR DATA.jsonl OUT.f32
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

def erf_gelu(x):
    # vectorised erf via numpy's polynomial-free route: scipy is not required
    a = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    erf = np.sign(x) * y
    return 0.5 * x * (1.0 + erf)

def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b

def main():
    model_dir, data, out = sys.argv[1:4]
    w = load_file(model_dir + "/model.safetensors")
    tok = Tokenizer.from_file(model_dir + "/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    texts = []
    with open(data) as f:
        for line in f:
            o = json.loads(line)
            texts += [o["a"], o["b"]]
    H, NH = 384, 12
    D = H // NH
    res = np.zeros((len(texts), H), dtype=np.float32)
    encs = tok.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
    B = 64
    for s in range(0, len(order), B):
        idx = order[s:s + B]
        L = max(len(encs[i].ids) for i in idx)
        ids = np.zeros((len(idx), L), dtype=np.int64)
        mask = np.zeros((len(idx), L), dtype=np.float32)
        for r, i in enumerate(idx):
            e = encs[i].ids
            ids[r, :len(e)] = e
            mask[r, :len(e)] = 1
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L][None] + w["embeddings.token_type_embeddings.weight"][0]
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = ((1.0 - mask)[:, None, None, :] * -1e9).astype(np.float32)
        for l in range(6):
            p = "encoder.layer.%d." % l
            def lin(v, n):
                # 2-D matmul: numpy sends it to BLAS (stacked 3-D matmul may not)
                W = w[p + n + ".weight"]
                return (v.reshape(-1, v.shape[-1]) @ W.T + w[p + n + ".bias"]).reshape(v.shape[:-1] + (W.shape[0],))
            q = lin(x, "attention.self.query").reshape(len(idx), L, NH, D).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(len(idx), L, NH, D).transpose(0, 2, 1, 3)
            v = lin(x, "attention.self.value").reshape(len(idx), L, NH, D).transpose(0, 2, 1, 3)
            a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D) + bias
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(0, 2, 1, 3).reshape(len(idx), L, H)
            x = layer_norm(x + lin(c, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            h = erf_gelu(lin(x, "intermediate.dense"))
            x = layer_norm(x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        res[idx] = pooled
    res.astype("<f4").tofile(out)
    print("embedded %d texts -> %s" % (len(texts), out), file=sys.stderr)

if __name__ == "__main__":
    main()
