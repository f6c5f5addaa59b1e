#!/usr/bin/env python3
"""Generate tests/ref/tokenizer_vectors.json and tests/ref/chat_vectors.json.

Reference: llama.cpp through llama-cpp-python (Llama(vocab_only=True) and
Llama.tokenize), and jinja2 rendering of the model's own chat template. Usage:

    /work/refvenv/bin/python tests/ref/gen_tokenizer_vectors.py [models/SmolLM2-135M-Instruct.Q4_1.gguf]

Cases:
  * every entry of tests/ref/tokenizer_corpus.json ("text", or "hex" for byte
    strings that are not valid UTF-8), tokenized with special=True and
    special=False, add_bos=False;
  * N_RANDOM random byte strings (fixed seed) mixing ASCII, whitespace, digits,
    letters of several scripts, combining marks, emoji, special-token text and
    invalid bytes;
  * the corpus again with the model's tokenizer.ggml.pre replaced by "gpt-2",
    "default" and "llama-bpe" (a vocab-only copy of the GGUF with one string
    changed and no tensors), to check the other pre-tokenizers on a real vocab.

Inputs that make llama.cpp abort (4-byte sequences above U+10FFFF) are not
asked of the reference; barista's own handling of them is tested in C.
"""
import base64
import json
import os
import random
import struct
import sys
import tempfile

import jinja2
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
N_RANDOM = 200
SEED = 20261126


# ---- a minimal GGUF KV reader/writer (to make vocab-only variants) ----------

SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_kvs(path):
    """Return (version, [(key, type, raw value bytes)]) of a GGUF file."""
    data = open(path, "rb").read()
    assert data[:4] == b"GGUF"
    ver, n_t, n_kv = struct.unpack_from("<Iqq", data, 4)
    off = 24

    def skip_val(t, off):
        if t == 8:
            (n,) = struct.unpack_from("<Q", data, off)
            return off + 8 + n
        if t == 9:
            at, n = struct.unpack_from("<iQ", data, off)
            off += 12
            if at == 8:
                for _ in range(n):
                    off = skip_val(8, off)
                return off
            return off + n * struct.calcsize("<" + SCALAR[at])
        return off + struct.calcsize("<" + SCALAR[t])

    kvs = []
    for _ in range(n_kv):
        (kn,) = struct.unpack_from("<Q", data, off)
        key = data[off + 8 : off + 8 + kn].decode()
        off += 8 + kn
        (t,) = struct.unpack_from("<i", data, off)
        off += 4
        end = skip_val(t, off)
        kvs.append((key, t, data[off:end]))
        off = end
    return ver, kvs


def write_vocab_gguf(path, kvs, replace):
    """Write a GGUF with the given KVs (some string values replaced), no tensors."""
    out = bytearray(b"GGUF" + struct.pack("<Iqq", 3, 0, len(kvs)))
    for key, t, raw in kvs:
        kb = key.encode()
        out += struct.pack("<Q", len(kb)) + kb + struct.pack("<i", t)
        if key in replace:
            v = replace[key].encode()
            raw = struct.pack("<Q", len(v)) + v
        out += raw
    open(path, "wb").write(out)


# ---- cases ----------------------------------------------------------------------

def case_bytes(c):
    return bytes.fromhex(c["hex"]) if "hex" in c else c["text"].encode("utf-8")


def random_cases(rng):
    pools = [
        [b" ", b"  ", b"\t", b"\n", b"\r\n", b"\n\n", "\u00a0".encode(), "\u3000".encode(), "\u2003".encode()],
        [bytes([c]) for c in range(0x21, 0x7F)],
        [w.encode() for w in ["the", "The", "and", "hello", "World", "token", "izer", "ing", "'s", "'t", "'re", "'S", "'ll"]],
        [d.encode() for d in ["0", "1", "42", "1234", "99999", "3.14", "٣", "²", "Ⅻ", "１"]],
        [w.encode() for w in ["é", "ñ", "ü", "e\u0301", "\u0308", "ß", "Ж", "λ", "ø", "ł", "İ", "ı"]],
        [w.encode() for w in ["你", "好", "世界", "日本", "語", "こ", "カ", "한", "국", "ب", "ع", "ש", "न", "ส", "𠜎"]],
        [w.encode() for w in ["😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "🎉", "\u200d", "\ufe0f", "©"]],
        [w.encode() for w in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", "<|im_start", "|>", "<"]],
        [b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\x80", b"\xed\xa0\x80", b"\xfe", b"\x00"],
    ]
    weights = [4, 6, 5, 3, 3, 3, 2, 1, 1]
    out = []
    for i in range(N_RANDOM):
        n = rng.randint(1, 40 if i % 10 else 200)
        parts = []
        for _ in range(n):
            pool = rng.choices(pools, weights)[0]
            parts.append(rng.choice(pool))
        out.append(b"".join(parts))
    return out


def stream_cases(rng):
    """Byte strings for the streaming decoder (fed one byte token at a time);
    expected text is Python's errors="replace" decoding (maximal subparts)."""
    pool = [b"a", b" ", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xf4\x8f\xbf\xbf", b"\xc3", b"\xe2\x82",
            b"\xf0\x9f", b"\xf0\x9f\x98", b"\x80", b"\xbf", b"\xe0\x80", b"\xe0\xa0\x80", b"\xe0\x9f",
            b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xf0\x8f", b"\xf0\x90\x80\x80", b"\xf4\x90", b"\xf4\x90\x80",
            b"\xf3\xa0\x80\x81"]
    # (SmolLM2 has no tokens for bytes C0, C1, F1, F2, F5-FF, so those cannot be
    # fed as byte tokens; the encoder cases cover them)
    out = []
    for _ in range(150):
        b = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        out.append({"b64": base64.b64encode(b).decode(), "expected": b.decode("utf-8", errors="replace")})
    return out


def tokenize(llm, b, special):
    return llm.tokenize(b, add_bos=False, special=special)


def is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def entry(b, tag, llm):
    try:
        text = b.decode("utf-8")
        if "\0" in text:  # C readers of the JSON stop at NUL
            raise UnicodeDecodeError("utf-8", b, 0, 1, "NUL")
        e = {"tag": tag, "text": text}
    except UnicodeDecodeError:
        e = {"tag": tag, "b64": base64.b64encode(b).decode(), "utf8": is_utf8(b)}
    e["ids"] = tokenize(llm, b, True)
    e["ids_nospecial"] = tokenize(llm, b, False)
    return e


def chat_cases():
    return [
        {"name": "single user", "messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
        {"name": "system first", "messages": [{"role": "system", "content": "You are terse."},
                                              {"role": "user", "content": "Hi"}], "add_generation_prompt": True},
        {"name": "multi turn", "messages": [{"role": "user", "content": "What is 2+2?"},
                                            {"role": "assistant", "content": "4."},
                                            {"role": "user", "content": "And 3+3?"}], "add_generation_prompt": True},
        {"name": "no generation prompt", "messages": [{"role": "user", "content": "Hi"},
                                                      {"role": "assistant", "content": "Hello."}],
         "add_generation_prompt": False},
        {"name": "no messages", "messages": [], "add_generation_prompt": True},
        {"name": "no messages no prompt", "messages": [], "add_generation_prompt": False},
        {"name": "assistant first", "messages": [{"role": "assistant", "content": "I start."}],
         "add_generation_prompt": True},
        {"name": "system later", "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
         "add_generation_prompt": True},
        {"name": "empty content", "messages": [{"role": "user", "content": ""}], "add_generation_prompt": True},
        {"name": "unicode and newlines", "messages": [{"role": "user", "content": "Café ☕\n\n  indented\tline\n你好 😀"}],
         "add_generation_prompt": True},
        {"name": "custom role", "messages": [{"role": "tool", "content": "{\"ok\": true}"}],
         "add_generation_prompt": True},
        {"name": "only system", "messages": [{"role": "system", "content": ""}], "add_generation_prompt": True},
    ]


def main():
    ver, kvs = gguf_kvs(MODEL)
    kv = {k: (t, raw) for k, t, raw in kvs}
    llm = Llama(model_path=MODEL, vocab_only=True, verbose=False)
    corpus = json.load(open(os.path.join(HERE, "tokenizer_corpus.json"), encoding="utf-8"))

    cases = [entry(case_bytes(c), c["tag"], llm) for c in corpus]
    rng = random.Random(SEED)
    cases += [entry(b, "random", llm) for b in random_cases(rng)]

    variants = {}
    with tempfile.TemporaryDirectory() as td:
        for pre in ["gpt-2", "default", "llama-bpe"]:
            p = os.path.join(td, pre + ".gguf")
            write_vocab_gguf(p, kvs, {"tokenizer.ggml.pre": pre})
            v = Llama(model_path=p, vocab_only=True, verbose=False)
            variants[pre] = [tokenize(v, case_bytes(c), True) for c in corpus]
            del v

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out = {
        "generator": "tests/ref/gen_tokenizer_vectors.py",
        "reference": "llama-cpp-python %s (llama.cpp vendored), Llama(vocab_only=True).tokenize(add_bos=False)"
        % llama_cpp.__version__,
        "model": os.path.basename(MODEL),
        "n_vocab": llm.n_vocab(),
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "eog": [i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "n_corpus": len(corpus),
        "cases": cases,
        "pre_variants": variants,
        "stream_cases": stream_cases(random.Random(SEED + 1)),
    }
    with open(os.path.join(HERE, "tokenizer_vectors.json"), "w", encoding="utf-8") as f:
        f.write("{\n")
        items = [(k, v) for k, v in out.items() if k not in ("cases", "pre_variants", "stream_cases")]
        for k, v in items:
            f.write(" %s: %s,\n" % (json.dumps(k), json.dumps(v, ensure_ascii=False)))
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n ],\n")
        f.write(' "pre_variants": {\n')
        f.write(",\n".join("  %s: [\n%s\n  ]" % (json.dumps(k), ",\n".join("   " + json.dumps(x) for x in v))
                           for k, v in variants.items()))
        f.write("\n },\n")
        f.write(' "stream_cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in out["stream_cases"]))
        f.write("\n ]\n}\n")

    # chat template: render the model's own template with jinja2
    (tl,) = struct.unpack_from("<Q", kv["tokenizer.chat_template"][1], 0)
    template = kv["tokenizer.chat_template"][1][8 : 8 + tl].decode()
    env = jinja2.Environment()
    tmpl = env.from_string(template)
    chats = []
    for c in chat_cases():
        text = tmpl.render(messages=c["messages"], add_generation_prompt=c["add_generation_prompt"])
        c = dict(c)
        c["expected"] = text
        c["ids"] = tokenize(llm, text.encode(), True)
        chats.append(c)
    with open(os.path.join(HERE, "chat_vectors.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/ref/gen_tokenizer_vectors.py",
                   "reference": "jinja2 %s rendering of tokenizer.chat_template; ids from llama-cpp-python %s"
                   % (jinja2.__version__, llama_cpp.__version__),
                   "model": os.path.basename(MODEL), "template": template, "cases": chats},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d tokenizer cases (%d corpus, %d random), %d pre variants, %d chat cases"
          % (len(cases), len(corpus), N_RANDOM, len(variants), len(chats)))


if __name__ == "__main__":
    main()
