#!/usr/bin/env python3
"""Writes the seed corpora for fuzz/fuzz_gguf.c and fuzz/fuzz_safetensors.c.

Small valid files (each under 4 KB) that between them use every GGUF value
type, nested arrays, several ggml tensor types, v2 and v3, custom alignment,
and every safetensors dtype, metadata, scalars, empty tensors and header
padding. Run from anywhere: python3 fuzz/corpus/make_seeds.py
Not for: tests (the unit tests build their own files)."""
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml types: id -> (block elems, block bytes)
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
        "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q8_1": (9, 32, 36),
        "Q6_K": (14, 256, 210), "BF16": (30, 1, 2)}


def gstr(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def gvalue(t, v):
    if t == STRING:
        return gstr(v)
    if t == ARRAY:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        for it in items:
            out += gvalue(et, it)
        return out
    return struct.pack(SCALAR_FMT[t], v)


def gguf(kvs, tensors, version=3, align=32):
    """kvs: [(key, type, value)]; tensors: [(name, type name, ne list)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gvalue(t, v)
    off, infos = 0, []
    for name, tn, ne in tensors:
        tid, be, bb = GGML[tn]
        n = bb * (ne[0] // be)
        for d in ne[1:]:
            n *= d
        infos.append((name, tid, ne, off, n))
        off = (off + n + align - 1) // align * align
    for name, tid, ne, o, _ in infos:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", tid, o)
    out += b"\0" * ((align - len(out) % align) % align)
    if infos:
        end = infos[-1][3] + infos[-1][4]
        out += bytes((i * 37 + 11) & 0xFF for i in range(end))
    return out


def safetensors(entries, meta=None, pad=0):
    """entries: [(name, dtype, shape)], laid out in order."""
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "U16": 2, "I16": 2,
             "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
    header, off = {}, 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dt, shape in entries:
        n = sizes[dt]
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + bytes((i * 29 + 3) & 0xFF for i in range(off))


def main():
    g = HERE / "gguf"
    s = HERE / "safetensors"
    g.mkdir(exist_ok=True)
    s.mkdir(exist_ok=True)
    seeds = {
        g / "all_types.gguf": gguf(
            [("general.architecture", STRING, "llama"), ("general.alignment", U32, 32),
             ("t.u8", U8, 7), ("t.i8", I8, -7), ("t.u16", U16, 65535), ("t.i16", I16, -300),
             ("t.u32", U32, 30), ("t.i32", I32, -1), ("t.f32", F32, 1e-5), ("t.bool", BOOL, 1),
             ("t.u64", U64, 1 << 40), ("t.i64", I64, -5), ("t.f64", F64, 0.1),
             ("t.strs", ARRAY, (STRING, ["a", "bc", "", "\u0120t"])),
             ("t.f32s", ARRAY, (F32, [0.5, -2.0, 3.25])),
             ("t.bools", ARRAY, (BOOL, [0, 1, 1])),
             ("t.nested", ARRAY, (ARRAY, [(U8, [1, 2]), (STRING, ["x"]), (ARRAY, [(I8, [-1])])]))],
            [("a", "F32", [4, 2]), ("b", "F16", [8]), ("c", "Q4_0", [32]), ("d", "Q8_0", [32, 2]),
             ("e", "Q4_1", [32, 1, 1, 1]), ("f", "Q6_K", [256]), ("g", "BF16", [2, 2])]),
        g / "v2_align64.gguf": gguf(
            [("general.alignment", U32, 64), ("general.name", STRING, "v2")],
            [("w", "Q5_0", [32]), ("x", "Q5_1", [32]), ("y", "Q8_1", [32])], version=2, align=64),
        g / "empty.gguf": gguf([], []),
        g / "llama_like.gguf": gguf(
            [("general.architecture", STRING, "llama"), ("llama.block_count", U32, 1),
             ("llama.embedding_length", U32, 32), ("llama.attention.head_count", U32, 2),
             ("llama.rope.freq_base", F32, 10000.0),
             ("tokenizer.ggml.model", STRING, "gpt2"),
             ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<|endoftext|>", "a", "b", "ab"])),
             ("tokenizer.ggml.scores", ARRAY, (F32, [0.0, -1.0, -2.0, -3.0])),
             ("tokenizer.ggml.token_type", ARRAY, (I32, [3, 1, 1, 1])),
             ("tokenizer.ggml.merges", ARRAY, (STRING, ["a b"]))],
            [("token_embd.weight", "Q8_0", [32, 4]), ("blk.0.attn_norm.weight", "F32", [32]),
             ("output_norm.weight", "F32", [32])]),
        g / "hostile_strings.gguf": gguf(
            [(b"evil.\x1b[31mred", STRING, b"bell\x07 nul\x00 bad\xff\xfe \xc3\xa9"),
             ("long", STRING, "x" * 300)],
            [(b"t\x1b[2J\xff", "F32", [8])]),
        s / "basic.safetensors": safetensors(
            [("w", "F32", [2, 3]), ("b", "F16", [3]), ("i", "I64", []), ("e", "BOOL", [0, 5]),
             ("z", "U8", [3])], meta={"format": "pt", "note": "caf\u00e9"}, pad=5),
        s / "empty.safetensors": safetensors([]),
        s / "all_dtypes.safetensors": safetensors(
            [(f"t_{d}", d, [2, 1]) for d in ("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "U16",
                                             "I16", "F16", "BF16", "U32", "I32", "F32", "U64",
                                             "I64", "F64")]),
        s / "bert_like.safetensors": safetensors(
            [("embeddings.position_ids", "I64", [1, 8]),
             ("embeddings.word_embeddings.weight", "F32", [10, 4]),
             ("encoder.layer.0.attention.self.query.weight", "F32", [4, 4]),
             ("pooler.dense.bias", "F32", [4])], meta={"format": "pt"}),
    }
    for path, data in seeds.items():
        assert len(data) < 4096, path
        path.write_bytes(data)
        print(f"{path.relative_to(HERE)}: {len(data)} bytes")


if __name__ == "__main__":
    main()
