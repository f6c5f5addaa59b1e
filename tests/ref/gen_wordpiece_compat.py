#!/usr/bin/env python3
"""gen_wordpiece_compat.py — print the C tables of src/engine/wordpiece.c that
list code points whose Unicode category (Python's unicodedata, Unicode 14)
Hugging Face `tokenizers` does NOT treat as that category, because its
`unicode_categories` tables predate them (added in Unicode 9-14):

  punctuation that is not split off, control/format characters that are not
  removed by clean_text, nonspacing marks that strip_accents keeps.

Each is found by asking `tokenizers` itself ("q" + c + "q"), so the C code
matches it exactly for everything Unicode 14 assigns.

    python tests/ref/gen_wordpiece_compat.py [MODEL_DIR] > /tmp/tables.c
"""
import os
import sys
import unicodedata as u

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "models", "all-MiniLM-L6-v2")
t = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
t.no_padding()
t.no_truncation()


def ids(s):
    return t.encode(s, add_special_tokens=False).ids


def cps(pred):
    return [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF and pred(u.category(chr(c)))]


ref = ids("qq")
punct = [c for c in cps(lambda k: k.startswith("P")) if len(ids("x" + chr(c) + "x")) == 1]
ctrl = [c for c in cps(lambda k: k in ("Cc", "Cf", "Co")) if ids("q" + chr(c) + "q") != ref]
mn = [c for c in cps(lambda k: k == "Mn") if ids("q" + chr(c) + "q") != ref]


def ranges(name, xs):
    rs = []
    for c in xs:
        if rs and rs[-1][1] == c - 1:
            rs[-1][1] = c
        else:
            rs.append([c, c])
    print("static const uint32_t %s[][2] = {" % name)
    line = "   "
    for a, b in rs:
        item = " {0x%X, 0x%X}," % (a, b)
        if len(line) + len(item) > 96:
            print(line)
            line = "   "
        line += item
    print(line)
    print("};")


ranges("LEGACY_NOT_PUNCT", punct)
ranges("LEGACY_NOT_CTRL", ctrl)
ranges("LEGACY_NOT_MN", mn)
