#!/usr/bin/env python3
"""Generate reference vectors for barista from llama.cpp (llama-cpp-python).

Run with the reference venv (see tests/ref/MODEL_VECTORS.md):

    /work/refvenv/bin/python tests/ref/gen_model_vectors.py

Reads tests/ref/prompts.json, writes tests/ref/model_vectors.json. For every
prompt it records
  * the prompt token ids (llama.cpp's default tokenization: add_special=True,
    which honours the GGUF's tokenizer.ggml.add_bos_token; parse_special=False),
  * teacher forcing: for every prompt position i, the argmax token and the
    top-32 (token id, log-softmax) pairs of the logits at i (log-softmax over
    the full vocabulary in float64, rounded to 5 decimals; ties by lower id),
  * a greedy raw continuation of up to 32 tokens (stops after an
    <|endoftext|>(0) / <|im_end|>(2) token, which is included in the ids),
  * the ChatML prompt rendered from the GGUF's tokenizer.chat_template for a
    single user message (tokenized with parse_special=True) and its greedy
    continuation of up to 32 tokens, same rules.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

TOPK = 32
N_GEN = 32
STOP_IDS = (0, 2)  # <|endoftext|>, <|im_end|>
N_CTX = 2048
N_THREADS = 2
EXPECTED_CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                 "trained by Hugging Face<|im_end|>\n<|im_start|>user\n{prompt}"
                 "<|im_end|>\n<|im_start|>assistant\n")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_softmax(row):
    x = np.asarray(row, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def topk_pairs(lp, k):
    # sort by logp descending, ties by token id ascending
    idx = np.lexsort((np.arange(lp.shape[0]), -lp))[:k]
    return [[int(i), round(float(lp[i]), 5)] for i in idx]


def greedy(llm, tokens):
    """Greedy continuation via llm.generate; returns generated ids (stop id included)."""
    llm.reset()
    out = []
    for tok in llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, typical_p=1.0,
                            temp=0.0, repeat_penalty=1.0, frequency_penalty=0.0,
                            presence_penalty=0.0, reset=True):
        out.append(int(tok))
        if tok in STOP_IDS or len(out) >= N_GEN:
            break
    # Cross-check: with logits_all every generated id is the argmax of the
    # logits at the preceding position (the last one may not be evaluated).
    scores = llm.scores
    n = len(tokens)
    for j, tok in enumerate(out):
        row = n - 1 + j
        if row >= llm.n_tokens:
            break
        am = int(np.argmax(scores[row]))
        if am != tok:
            print(f"  warning: greedy token {j} = {tok} but argmax = {am}", file=sys.stderr)
    return out


def text_of(llm, ids):
    ids = [t for t in ids if t not in STOP_IDS]
    return llm.detokenize(ids).decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompts", default=os.path.join(HERE, "prompts.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "model_vectors.json"))
    args = ap.parse_args()

    import jinja2
    import llama_cpp

    llm = llama_cpp.Llama(model_path=args.model, n_ctx=N_CTX, logits_all=True,
                          n_threads=N_THREADS, verbose=False, seed=0)
    meta = llm.metadata
    add_bos_meta = meta.get("tokenizer.ggml.add_bos_token")
    bos = llm.token_bos()

    # Chat template from the GGUF, rendered like HF/llama.cpp's jinja path.
    tmpl_src = meta["tokenizer.chat_template"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # HF apply_chat_template settings
    tmpl = env.from_string(tmpl_src)

    def render_chat(prompt):
        return tmpl.render(messages=[{"role": "user", "content": prompt}],
                           add_generation_prompt=True, bos_token="<|im_start|>",
                           eos_token="<|im_end|>")

    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)

    cases = []
    add_bos_seen = set()
    for p in prompts:
        name, prompt = p["name"], p["prompt"]
        # llama.cpp default: add_special=True (honours add_bos_token), no special parsing.
        toks = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        add_bos_seen.add(bool(toks) and toks[0] == bos)
        if not 8 <= len(toks) <= 60:
            sys.exit(f"prompt {name!r} has {len(toks)} tokens; keep 8..60")

        # a. teacher forcing
        llm.reset()
        llm.eval(toks)
        scores = np.array(llm.scores[:len(toks)], dtype=np.float64)
        top1, top = [], []
        for i in range(len(toks)):
            lp = log_softmax(scores[i])
            pairs = topk_pairs(lp, TOPK)
            top1.append(int(np.argmax(scores[i])))
            top.append(pairs)

        # b. greedy raw continuation
        g_raw = greedy(llm, toks)
        if g_raw and g_raw[0] != top1[-1]:
            print(f"  warning: {name}: greedy first token {g_raw[0]} != teacher top1 {top1[-1]}",
                  file=sys.stderr)

        # c. chat
        chat = render_chat(prompt)
        if chat != EXPECTED_CHAT.format(prompt=prompt):
            sys.exit(f"chat template rendering differs from the expected ChatML for {name!r}:\n{chat!r}")
        chat_toks = llm.tokenize(chat.encode("utf-8"), add_bos=True, special=True)
        g_chat = greedy(llm, chat_toks)

        cases.append({
            "name": name,
            "prompt": prompt,
            "tokens": [int(t) for t in toks],
            "teacher": {"top1": top1, "top": top},
            "greedy_raw": {"tokens": g_raw, "text": text_of(llm, g_raw)},
            "chat_prompt": chat,
            "chat_tokens": [int(t) for t in chat_toks],
            "greedy_chat": {"tokens": g_chat, "text": text_of(llm, g_chat)},
        })
        print(f"{name}: {len(toks)} tokens, raw {len(g_raw)}, chat {len(g_chat)}: "
              f"{text_of(llm, g_chat)[:60]!r}", file=sys.stderr)

    if len(add_bos_seen) != 1:
        sys.exit("inconsistent BOS handling across prompts")
    add_bos = add_bos_seen.pop()

    header = {
        "model": os.path.basename(args.model),
        "model_sha256": sha256(args.model),
        "llama_cpp_python_version": llama_cpp.__version__,
        "llama_system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "add_bos": add_bos,
        "gguf_add_bos_token": add_bos_meta,
        "settings": {
            "n_ctx": N_CTX, "n_threads": N_THREADS, "logits_all": True, "seed": 0,
            "n_batch": llm.n_batch,
            "tokenize": "llm.tokenize(text, add_bos=True (=add_special, honours the GGUF), special=False)",
            "chat_tokenize": "llm.tokenize(chat_prompt, add_bos=True, special=True)",
            "teacher_topk": TOPK,
            "logprob": "log_softmax of raw logits over the full vocab in float64, rounded to 5 decimals",
            "teacher_index": "top[i] is the distribution for the token after tokens[i]",
            "greedy": "llm.generate(top_k=1, temp=0, repeat_penalty=1.0); max %d tokens; "
                      "stop after ids %s, which are included in tokens but not in text" % (N_GEN, list(STOP_IDS)),
            "chat_template": "GGUF tokenizer.chat_template rendered with jinja2 "
                             "(trim_blocks, lstrip_blocks), one user message, add_generation_prompt=True",
        },
        "vocab_size": llm.n_vocab(),
    }

    # One case per line keeps the file small and diffs readable.
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("{\n")
        for k, v in header.items():
            f.write(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
        f.write('"cases": [\n')
        for i, c in enumerate(cases):
            f.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(cases) else "\n")
        f.write("]\n}\n")
    json.load(open(args.out, encoding="utf-8"))  # sanity
    print(f"wrote {args.out}: {len(cases)} cases, {os.path.getsize(args.out)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
