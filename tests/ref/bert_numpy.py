#!/usr/bin/env python3
"""bert_numpy.py — an independent reference for barista's BERT sentence
encoder (src/engine/bert.c): all-MiniLM-L6-v2 in plain numpy, float64.

It reads model.safetensors with numpy only (the format is 8 bytes of header
length, a JSON header, raw little-endian tensors), takes token ids from
Hugging Face `tokenizers` (tokenizer.json, padding off, truncation to
sentence_bert_config.json's max_seq_length = 256, as sentence-transformers
runs it), and computes what sentence-transformers' Transformer -> Pooling
(mean) -> Normalize modules compute: embeddings (word + position + token type
0) + LayerNorm, 6 post-LN encoder layers with erf GELU, mean over the real
tokens, L2 normalisation.

Checked against published numbers (self_check(), run by `python
bert_numpy.py --check` and by tests/e2e/test_embed.py):
  * sbert.net, "Computing Embeddings" usage page
    (https://sbert.net/docs/sentence_transformer/usage/usage.html), model
    all-MiniLM-L6-v2, sentences "The weather is lovely today.", "It's so
    sunny outside!", "He drove to the stadium.": similarities 0.6660 (0-1),
    0.1046 (0-2), 0.1411 (1-2);
  * sbert.net, "Semantic Textual Similarity" page
    (https://sbert.net/docs/sentence_transformer/usage/semantic_textual_similarity.html):
    the 3 x 3 cross similarities printed there (0.0543, 0.8939, -0.0502, ...).

Usage: bert_numpy.py [--check] [MODEL_DIR]  (as a module: Bert(dir).embed(texts))
"""
import json
import math
import os
import struct
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only fight
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(os.environ.get("BARISTA_MODELS", os.path.join(HERE, "..", "..", "models")),
                           "all-MiniLM-L6-v2")

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
        out[name.removeprefix("bert.")] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
    return out


def erf(x):
    """numpy has no erf (and math.erf per element is far too slow here): the
    Chebyshev fit of erfc from Numerical Recipes (erfcc, |relative error| <
    1.2e-7 everywhere), vectorised."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


class Bert:
    def __init__(self, model_dir=DEFAULT_DIR):
        from tokenizers import Tokenizer
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
            self.max_len = json.load(f)["max_seq_length"]
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_len)

    def ids(self, text):
        return self.tok.encode(text).ids

    def embed_ids(self, batch):
        """batch: list of id lists, all of the same length L -> (B, H)."""
        w, c = self.w, self.cfg
        H, nh = c["hidden_size"], c["num_attention_heads"]
        dh, eps = H // nh, c["layer_norm_eps"]
        ids = np.asarray(batch)
        B, L = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for l in range(c["num_hidden_layers"]):
            p = "encoder.layer.%d." % l

            def lin(name, v):
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def heads(v):  # (B, L, H) -> (B, nh, L, dh)
                return v.reshape(B, L, nh, dh).transpose(0, 2, 1, 3)

            q = heads(lin("attention.self.query", x))
            k = heads(lin("attention.self.key", x))
            v = heads(lin("attention.self.value", x))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
            x = layer_norm(lin("attention.output.dense", a) + x, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            h = lin("intermediate.dense", x)
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = layer_norm(lin("output.dense", h) + x, w[p + "output.LayerNorm.weight"],
                           w[p + "output.LayerNorm.bias"], eps)
        m = x.mean(1)  # every token is real: no padding, so a plain mean
        n = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.maximum(n, 1e-12)

    def embed(self, texts):
        """texts -> (n, H); sequences of equal length share one batched pass."""
        ids = [self.ids(t) for t in texts]
        out = np.zeros((len(texts), self.cfg["hidden_size"]))
        by_len = {}
        for i, x in enumerate(ids):
            by_len.setdefault(len(x), []).append(i)
        for idx in by_len.values():
            for k in range(0, len(idx), 64):
                part = idx[k:k + 64]
                out[part] = self.embed_ids([ids[i] for i in part])
        return out


PUBLISHED = [
    # (sentences A, sentences B, expected similarity matrix rounded to 4 places)
    (["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."], None,
     [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]),
    (["The new movie is awesome", "The cat sits outside", "A man is playing guitar"],
     ["The dog plays in the garden", "The new movie is so great", "A woman watches TV"],
     [[0.0543, 0.8939, -0.0502], [0.2838, -0.0029, 0.1310], [0.2277, -0.0136, -0.0327]]),
]


def self_check(embed, tol=1.5e-4):
    """embed(list of str) -> (n, 384) array. Returns the largest deviation from
    the published similarities; raises AssertionError past tol."""
    worst = 0.0
    for a, b, want in PUBLISHED:
        ea = np.asarray(embed(a), dtype=np.float64)
        eb = ea if b is None else np.asarray(embed(b), dtype=np.float64)
        got = ea @ eb.T
        dev = float(np.abs(got - np.asarray(want)).max())
        worst = max(worst, dev)
        assert dev <= tol, "published similarities %s, computed %s" % (want, got.round(4).tolist())
    return worst


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--check"]
    bert = Bert(args[0] if args else DEFAULT_DIR)
    if "--check" in sys.argv:
        print("max deviation from the published similarities: %.2e" % self_check(bert.embed))
    else:
        for line in sys.stdin:
            print(json.dumps(bert.embed([line.rstrip("\n")])[0].tolist()))
