#!/usr/bin/env python3
"""gen_wordpiece_vectors.py — the WordPiece / embedding test corpus and its
expected token ids, from Hugging Face `tokenizers` (the implementation
sentence-transformers runs for all-MiniLM-L6-v2).

Writes tests/ref/wordpiece_vectors.json: {"generator", "reference",
"model", "max_seq_length", "cases": [{"tag", "text", "ids"}]} where ids are
the untruncated ids ([CLS] ... [SEP], no padding). tests/unit/test_wordpiece.c
checks every case (and the 256-token truncation of the long ones);
tests/e2e/test_embed.py embeds every text with barista and with
tests/ref/bert_numpy.py.

    python tests/ref/gen_wordpiece_vectors.py [MODEL_DIR]

The corpus is deterministic (fixed seed); rerun after changing it.
"""
import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("BARISTA_MODELS", os.path.join(HERE, "..", "..", "models")), "all-MiniLM-L6-v2")

HAND = [
    ("english", "How do I reset my password?"),
    ("english", "I forgot my password, how can I change it?"),
    ("english", "What is the capital of France?"),
    ("english", "The quick brown fox jumps over the lazy dog."),
    ("english", "This is an example sentence"),
    ("english", "Each sentence is converted"),
    ("english", "A man is eating food."),
    ("english", "A man is eating a piece of bread."),
    ("english", "The girl is carrying a baby."),
    ("english", "A man is riding a horse."),
    ("english", "A woman is playing violin."),
    ("english", "Two men pushed carts through the woods."),
    ("english", "A man is riding a white horse on an enclosed ground."),
    ("english", "A monkey is playing drums."),
    ("english", "Someone in a gorilla costume is playing a set of drums."),
    ("english", "Can I get a refund within 4 days?"),
    ("english", "Can I get a refund within 10 days?"),
    ("english", "I don't like it. I do not like it! Isn't it?"),
    ("english", "U.S.A. vs. U.K.: 3-2 (after extra-time); e-mail me@example.com"),
    ("english", "It's 9:30 a.m. on 2024-01-15 and it costs $1,234.56 (≈ €1.100)."),
    ("english", "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious"),
    ("english", "HELLO World, HeLLo wOrLd"),
    ("accents", "Café crème brûlée à la mode, naïve coöperation, résumé"),
    ("accents", "Ångström, Øresund, Œuvre, Straße, ﬁnancial ﬂow"),
    ("accents", "İstanbul, IĞDIR, ışık, Ωmega ΣΑΣ, Ελληνικά"),
    ("accents", "São Paulo, Kraków, Đà Nẵng, Tiếng Việt có dấu"),
    ("accents", "e\u0301 e\u0300 a\u0308 o\u0303 n\u0303 combining marks"),
    ("accents", "\u1e9b\u0323 \u0071\u0307\u0323 ordering of marks"),
    ("accents", "Ǆ ǅ ǆ Ǉ ǈ ǉ titlecase digraphs"),
    ("cjk", "我爱北京天安门"),
    ("cjk", "今天天气很好，我们去公园散步吧。"),
    ("cjk", "東京タワーは日本の有名な観光地です。"),
    ("cjk", "한국어 문장을 토큰화합니다."),
    ("cjk", "中文English混合text测试123"),
    ("cjk", "𠀀𠀁 extension B and 丽 compatibility ideographs"),
    ("cjk", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ half-width ｶﾀｶﾅ"),
    ("emoji", "I love pizza 🍕🍕 and 😀😃😄!"),
    ("emoji", "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 skin tone"),
    ("emoji", "🥰🫠🤖 newer emoji ❤️ ✨"),
    ("emoji", "©®™ ☺ ☃ ♥ ★ ✓ ✗"),
    ("code", "def f(x):\n    return x ** 2 + 1  # square"),
    ("code", "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }"),
    ("code", "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';"),
    ("code", "curl -X POST https://api.example.com/v1/embeddings -H 'Content-Type: application/json'"),
    ("code", "<div class=\"x\">Hello &amp; welcome</div>"),
    ("code", "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}"),
    ("code", "x = lambda a, b: a if a > b else b; print(x(3, 4))"),
    ("code", "git commit -m 'fix: handle NULL' && make -j2 2>&1 | tee log"),
    ("special", "hello [MASK] world"),
    ("special", "[CLS] already here [SEP]"),
    ("special", "[PAD][UNK][CLS][SEP][MASK]"),
    ("special", "[mask] lower-case is not special [Mask]"),
    ("special", "nested [[SEP]] brackets [SEP"),
    ("whitespace", ""),
    ("whitespace", " "),
    ("whitespace", "   "),
    ("whitespace", "\t\n\r"),
    ("whitespace", "\u00a0\u2003\u3000\u2028"),
    ("whitespace", "  leading and trailing  "),
    ("whitespace", "many     spaces\t\ttabs\n\nnewlines"),
    ("control", "\x00"),
    ("control", "a\x00b\x01c\x07d\x1fe\x7ff"),
    ("control", "zero\u200bwidth\u200cjoin\u200dners\ufeff"),
    ("control", "bidi \u202ehidden\u202c text \u2066iso\u2069"),
    ("control", "replacement \ufffd char"),
    ("control", "\x0b\x0c vertical tab and form feed \x85 next line"),
    ("control", "soft\u00adhyphen and \u0600 arabic number sign"),
    ("control", "private use \ue000\uf8ff and unassigned \u0378"),
    ("scripts", "Привет, как дела? Всё хорошо."),
    ("scripts", "مرحبا بالعالم، كيف حالك؟"),
    ("scripts", "שלום עולם, מה שלומך?"),
    ("scripts", "नमस्ते दुनिया, आप कैसे हैं?"),
    ("scripts", "สวัสดีชาวโลก"),
    ("scripts", "Γειά σου Κόσμε"),
    ("scripts", "ሰላም ዓለም"),
    ("scripts", "Բարեւ աշխարհ"),
    ("scripts", "გამარჯობა მსოფლიო"),
    ("punct", "Hello!!! What??? ...Really... «quoted» „German“ ‚single‘ — dash – en"),
    ("punct", "¿Qué? ¡Sí! 「括弧」『二重』【墨付き】、。・"),
    ("punct", "a+b=c, a<b>c, a^b, a|b, a~b, a`b, $5, 100%, #tag, @user"),
    ("punct", "§ ¶ † ‡ • ‰ ′ ″ ‹ › ⁂ ※ ¦ ¬ ± × ÷"),
    ("punct", "∑∏∫√∞≈≠≤≥ math symbols and ①②③ circled"),
    ("long-word", "a" * 99),
    ("long-word", "b" * 100),
    ("long-word", "c" * 101),
    ("long-word", "pneumonoultramicroscopicsilicovolcanoconiosis" * 3),
    ("long-word", "é" * 100 + " " + "é" * 101),
]

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her would "
         "make like him into time has look two more write go see number no way could people my than "
         "first water been call who oil its now find long down day did get come made may part "
         "password reset account refund shipping order cache embedding vector semantic latency "
         "throughput kernel matrix tokenizer question answer python javascript database server "
         "weather tomorrow recipe chocolate cake mountain river quantum physics economics history").split()
ACCENTED = "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžłđßÀÉÎÕÜŸ"
CJK = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从"
EMOJI = "😀😂🥲😍🤔👍🙏🔥✨🎉❤️💡🚀🌍🍕☕🐍🦀🧠📈"
SCRIPTS = ["Привет мир", "Bonjour le monde", "Hallo Welt", "Hola mundo", "Olá mundo", "Ciao mondo",
           "こんにちは世界", "안녕하세요 세계", "你好世界", "مرحبا", "שלום", "नमस्ते", "สวัสดี", "Γειά"]
CODE = ["if (x != NULL) free(x);", "return a.map(x => x * 2);", "fn main() { println!(\"hi\"); }",
        "SELECT count(*) FROM t;", "import numpy as np", "ls -la /tmp | grep log", "x[i] += y[j] >> 3;",
        "<a href=\"/x?y=1&z=2\">link</a>", "assert f(3) == 9, 'bad'", "#include <stdio.h>"]


def random_unicode(rng):
    blocks = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff),
              (0x590, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x206f),
              (0x2100, 0x22ff), (0x3000, 0x30ff), (0x4e00, 0x4f00), (0xac00, 0xad00), (0xff00, 0xffef),
              (0x1f300, 0x1f64f), (0x1f900, 0x1f9ff), (0x20000, 0x20100), (0xe000, 0xe010), (0x0, 0x1f)]
    out = []
    for _ in range(rng.randint(1, 40)):
        a, b = rng.choice(blocks)
        out.append(chr(rng.randint(a, b)))
    return "".join(out)


def build_corpus():
    rng = random.Random(20261203)
    cases = list(HAND)
    # a 1,000-word text (truncated to 256 tokens by the model)
    cases.append(("long-1000", " ".join(rng.choice(WORDS) for _ in range(1000)) + "."))
    cases.append(("long-300", " ".join(rng.choice(WORDS) for _ in range(300))))
    cases.append(("long-cjk", "".join(rng.choice(CJK) for _ in range(400))))
    for i in range(150):
        n = rng.randint(1, 30)
        ws = [rng.choice(WORDS) for _ in range(n)]
        s = " ".join(ws)
        if i % 3 == 0:
            s = s.capitalize() + rng.choice([".", "?", "!", ""])
        if i % 5 == 0:
            s = s.upper()
        cases.append(("english-gen", s))
    for i in range(60):
        s = "".join(rng.choice(ACCENTED + "abcdefghij ") for _ in range(rng.randint(1, 40)))
        cases.append(("accents-gen", s))
    for i in range(50):
        s = "".join(rng.choice(CJK) for _ in range(rng.randint(1, 20)))
        if i % 2:
            s = rng.choice(WORDS) + s + " " + rng.choice(WORDS)
        cases.append(("cjk-gen", s))
    for i in range(40):
        s = " ".join(rng.choice(WORDS + list(EMOJI)) for _ in range(rng.randint(1, 12)))
        cases.append(("emoji-gen", s))
    for i in range(40):
        cases.append(("code-gen", " ".join(rng.sample(CODE, rng.randint(1, 3)))))
    for i in range(30):
        cases.append(("scripts-gen", " ".join(rng.sample(SCRIPTS, rng.randint(1, 4)))))
    for i in range(60):
        cases.append(("random-unicode", random_unicode(rng)))
    for i in range(20):
        s = "".join(rng.choice([" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2009", "\x00", "\x01",
                                "\u200b", "\ufeff"]) for _ in range(rng.randint(0, 10)))
        cases.append(("whitespace-gen", s))
    for i in range(20):
        s = "".join(rng.choice(["[MASK]", "[SEP]", "[CLS]", "[UNK]", "[PAD]", " ", "x", "[", "]",
                                "mask", "##"]) for _ in range(rng.randint(1, 10)))
        cases.append(("special-gen", s))
    return cases


def main():
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    out = []
    for tag, text in build_corpus():
        ids = tok.encode(text).ids
        case = {"tag": tag, "text": text, "ids": ids}
        if "\x00" in text:  # C strings end at NUL: give the bytes too
            case["hex"] = text.encode("utf-8").hex()
        out.append(case)
    doc = {
        "generator": "tests/ref/gen_wordpiece_vectors.py",
        "reference": "tokenizers %s, Tokenizer.from_file(tokenizer.json), no_padding(), "
                     "no_truncation(); ids = encode(text).ids" % tokenizers.__version__,
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": 256,
        "cases": out,
    }
    path = os.path.join(HERE, "wordpiece_vectors.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print("%s: %d cases, %d bytes" % (path, len(out), os.path.getsize(path)))


if __name__ == "__main__":
    main()
