"""barista's BERT encoder (`barista embed`) against the independent numpy
reference tests/ref/bert_numpy.py on the 560 texts of
tests/ref/wordpiece_vectors.json (English, accents, CJK, emoji, code,
control characters, whitespace-only and empty strings, a 1,000-word text):
cosine similarity >= 0.9999 for every text, on the default kernel level and
forced to the scalar level (a subset there: it is the slow reference path).
The numpy reference itself is first checked against sbert.net's published
similarities. Needs numpy and tokenizers (tests/requirements.txt).

The reference vectors are cached in $BARISTA_CACHE/ref (default
~/.cache/barista/ref) under a hash of the model, corpus and reference code,
so only the first run pays for numpy."""
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
np = pytest.importorskip("numpy")
pytest.importorskip("tokenizers")

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "ref"))
import bert_numpy  # noqa: E402

CORPUS = ROOT / "tests" / "ref" / "wordpiece_vectors.json"


@pytest.fixture(scope="module")
def model_dir(models_dir):
    d = models_dir / "all-MiniLM-L6-v2"
    if not (d / "model.safetensors").exists():
        pytest.fail(f"all-MiniLM-L6-v2 not fetched into {models_dir}; run scripts/fetch-models")
    return d


@pytest.fixture(scope="module")
def cases():
    return json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]


def text_bytes(c):
    return bytes.fromhex(c["hex"]) if "hex" in c else c["text"].encode("utf-8")


@pytest.fixture(scope="module")
def reference(model_dir, cases):
    h = hashlib.sha256()
    st = (model_dir / "model.safetensors").stat()
    h.update(f"{st.st_size}".encode())
    h.update(CORPUS.read_bytes())
    h.update((ROOT / "tests" / "ref" / "bert_numpy.py").read_bytes())
    cache = pathlib.Path(os.environ.get("BARISTA_CACHE", pathlib.Path.home() / ".cache" / "barista"))
    path = cache / "ref" / f"bert_numpy_{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    bert = bert_numpy.Bert(str(model_dir))
    bert_numpy.self_check(bert.embed)  # the reference agrees with the published numbers
    ref = bert.embed([text_bytes(c).decode("utf-8") for c in cases])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, ref)
    return ref


def barista_embed(barista_bin, model_dir, texts, env_extra=None, args=()):
    env = dict(os.environ)
    env.update(env_extra or {})
    stdin = "".join(t.hex() + "\n" for t in texts)
    out = subprocess.run([barista_bin, "embed", "-m", str(model_dir), "--hex", *args],
                         input=stdin, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def cosines(got, ref):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape
    num = (got * ref).sum(1)
    return num / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)


def test_reference_is_checked_against_published_numbers(model_dir, reference):
    # the reference fixture ran self_check (or loaded a cached, checked result);
    # and barista itself reproduces the published similarities
    bert_numpy.self_check(lambda ts: barista_embed_cached(model_dir, ts))


_BIN = {}


def barista_embed_cached(model_dir, texts):
    return np.asarray(barista_embed(_BIN["bin"], model_dir, [t.encode() for t in texts]))


@pytest.fixture(autouse=True)
def _remember_bin(barista_bin):
    _BIN["bin"] = barista_bin


def test_all_texts_default_level(barista_bin, model_dir, cases, reference):
    got = barista_embed(barista_bin, model_dir, [text_bytes(c) for c in cases], args=("-t", "2"))
    cos = cosines(got, reference)
    worst = int(cos.argmin())
    print(f"{len(cases)} texts: min cosine {cos.min():.9f} ({cases[worst]['tag']}), "
          f"mean {cos.mean():.9f}")
    assert len(cases) >= 500
    assert cos.min() >= 0.9999, cases[worst]


def test_subset_scalar_level(barista_bin, model_dir, cases, reference, sanitized):
    # every 10th text (40th under the sanitizer: the scalar kernels are also
    # checked bit for bit by test_kernels) and the 1,000-word one (truncated
    # to 256 tokens)
    step = 40 if sanitized else 10
    idx = [i for i, c in enumerate(cases) if i % step == 0 or c["tag"] == "long-1000"]
    got = barista_embed(barista_bin, model_dir, [text_bytes(cases[i]) for i in idx],
                        env_extra={"BARISTA_CPU": "scalar"})
    cos = cosines(got, reference[idx])
    print(f"scalar: {len(idx)} texts, min cosine {cos.min():.9f}")
    assert cos.min() >= 0.9999


def test_ids_and_truncation(barista_bin, model_dir, cases):
    env = dict(os.environ)
    stdin = "".join(text_bytes(c).hex() + "\n" for c in cases)
    out = subprocess.run([barista_bin, "embed", "-m", str(model_dir), "--hex", "--ids"], input=stdin,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(cases)
    n_long = 0
    for c, line in zip(cases, lines):
        want = c["ids"]
        if len(want) > 256:  # sentence-transformers' truncation: 255 pieces then [SEP]
            want = want[:255] + [102]
            n_long += 1
        assert json.loads(line) == want, c["text"][:80]
    assert n_long >= 2


def test_bad_input_is_refused(barista_bin, model_dir):
    out = subprocess.run([barista_bin, "embed", "-m", str(model_dir), "--hex"], input="zz\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not hex" in out.stderr
    out = subprocess.run([barista_bin, "embed", "-m", "/nonexistent"], input="x\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "config.json" in out.stderr
    out = subprocess.run([barista_bin, "embed", "--batch", "0"], input="", capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
