"""`barista run`: generation from the command line, its output contract and
its handling of bad input (one line on stderr, exit 1 or 2, never a crash)."""
import json
import pathlib
import re
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STATS = re.compile(r"^prompt: (\d+) tokens, ([\d.]+) tok/s; generated: (\d+) tokens, ([\d.]+) tok/s$")


def run(barista_bin, *args, timeout=300):
    return subprocess.run([barista_bin, "run", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_chat_answer_is_coherent(barista_bin, gguf_path):
    r = run(barista_bin, "-m", gguf_path, "--chat", "-p", "What is caching?", "-n", "48",
            "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert "cach" in r.stdout.lower()
    last = r.stderr.strip().splitlines()[-1]
    m = STATS.match(last)
    assert m, last
    assert int(m.group(3)) <= 48


def test_greedy_matches_llama_cpp_reference(barista_bin, gguf_path):
    """The first reference case's greedy raw continuation (llama.cpp) — text equal
    at least on its first words (rounding-level differences may change later tokens)."""
    ref = json.loads((ROOT / "tests/ref/model_vectors.json").read_text())["cases"][0]
    r = run(barista_bin, "-m", gguf_path, "-p", ref["prompt"], "-n", "32", "--temp", "0")
    assert r.returncode == 0, r.stderr
    out = r.stdout.rstrip("\n")
    assert out[:20] == ref["greedy_raw"]["text"][:20]
    m = STATS.match(r.stderr.strip().splitlines()[-1])
    assert int(m.group(1)) == len(ref["tokens"])


def test_seed_reproducible(barista_bin, gguf_path):
    args = ["-m", gguf_path, "-p", "Once upon a time", "-n", "24", "--temp", "1.0", "--seed", "42"]
    a, b = run(barista_bin, *args), run(barista_bin, *args)
    assert a.returncode == 0 and b.returncode == 0
    assert a.stdout == b.stdout
    c = run(barista_bin, *args[:-1], "7")
    assert c.returncode == 0
    assert c.stdout != a.stdout


def test_stdout_only_text_and_n_limit(barista_bin, gguf_path):
    r = run(barista_bin, "-m", gguf_path, "-p", "1, 2, 3, 4,", "-n", "5", "--temp", "0",
            "--ignore-eos")
    assert r.returncode == 0, r.stderr
    m = STATS.match(r.stderr.strip().splitlines()[-1])
    assert int(m.group(3)) == 5
    assert "tok/s" not in r.stdout


@pytest.mark.parametrize("args,code", [
    (["-p", ""], 2),
    (["-p", "hi", "-n", "0"], 2),
    (["-p", "hi", "--temp", "abc"], 2),
    (["-p", "hi", "--bogus"], 2),
    ([], 2),
    (["-p"], 2),
])
def test_usage_errors(barista_bin, gguf_path, args, code):
    r = run(barista_bin, "-m", gguf_path, *args)
    assert r.returncode == code
    assert r.stderr.strip(), "an error must say what is wrong"
    assert "Traceback" not in r.stderr and "Sanitizer" not in r.stderr


def test_missing_and_non_gguf_files(barista_bin, tmp_path):
    r = run(barista_bin, "-m", str(tmp_path / "nope.gguf"), "-p", "hi")
    assert r.returncode == 1 and "nope.gguf" in r.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model" * 10)
    r = run(barista_bin, "-m", str(junk), "-p", "hi")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1


def test_prompt_longer_than_context(barista_bin, gguf_path):
    r = run(barista_bin, "-m", gguf_path, "--ctx", "32", "-p", "word " * 100)
    assert r.returncode == 1
    assert "context" in r.stderr and "32" in r.stderr


def _write_gguf(path, arch, with_tensors):
    import gguf
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    if with_tensors:
        w.add_tensor("token_embd.weight", np.zeros((10, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unsupported_architecture(barista_bin, tmp_path):
    p = tmp_path / "bert.gguf"
    _write_gguf(p, "bert", False)
    r = run(barista_bin, "-m", str(p), "-p", "hi")
    assert r.returncode == 1
    assert "architecture 'bert'" in r.stderr


def test_missing_tensor_is_named(barista_bin, tmp_path):
    p = tmp_path / "tiny.gguf"
    _write_gguf(p, "llama", True)
    r = run(barista_bin, "-m", str(p), "-p", "hi")
    assert r.returncode == 1
    assert "tensor" in r.stderr and ".weight" in r.stderr
