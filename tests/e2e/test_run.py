"""`barista run`: generation from the command line, its output contract and
its handling of bad input (one line on stderr, exit 1 or 2, never a crash)."""
import json
import os
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


# --- every option from the settings table: flags, short aliases, environment ---

def gen(barista_bin, *args, env=None, prompt="Once upon a time", n="12"):
    """Greedy-by-default generation of n tokens; returns (stdout, n_prompt, n_gen)."""
    r = subprocess.run([barista_bin, "run", "-p", prompt, "-n", n, "-t", "2", "--ignore-eos",
                        *args], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    m = STATS.match(r.stderr.strip().splitlines()[-1])
    assert m, r.stderr
    return r.stdout, int(m.group(1)), int(m.group(3))


def env_with(**kv):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BARISTA_") or k in ("BARISTA_MODELS", "BARISTA_CPU",
                                                    "BARISTA_SANITIZED")}
    env.update(kv)
    return env


def test_sampling_flags_take_effect(barista_bin, gguf_path):
    greedy = gen(barista_bin, "-m", gguf_path, "--temp", "0")[0]
    sampled = {gen(barista_bin, "-m", gguf_path, "--temp", "1.5", "--seed", s)[0]
               for s in ("3", "4")}
    assert greedy not in sampled, "sampling at temperature 1.5 must differ from greedy here"
    # each filter narrowed to one candidate makes sampling greedy again
    for narrow in (["--top-k", "1"], ["--min-p", "1"], ["--top-p", "0.0001"]):
        assert gen(barista_bin, "-m", gguf_path, "--temp", "1.5", "--seed", "3",
                   *narrow)[0] == greedy, narrow
    assert gen(barista_bin, "-m", gguf_path, "--temp", "0", "--repeat-penalty", "10",
               prompt="1, 2, 3, 4,")[0] != gen(barista_bin, "-m", gguf_path, "--temp", "0",
                                                prompt="1, 2, 3, 4,")[0]


def test_long_and_short_spellings_agree(barista_bin, gguf_path, tmp_path):
    long_ = gen(barista_bin, "--model", gguf_path, "--temp=0", "--n-predict", "5",
                "--threads", "1", "--ctx", "256", "--top-k", "40", "--seed", "-1", n="9")
    short = gen(barista_bin, "-m", gguf_path, "--temp", "0", "-n", "5", "-t", "1", n="9")
    assert long_ == short and short[2] == 5
    f = tmp_path / "prompt.txt"
    f.write_text("Once upon a time")
    assert gen(barista_bin, "-m", gguf_path, "--temp", "0")[0] == \
        subprocess.run([barista_bin, "run", "-m", gguf_path, "-f", str(f), "--temp", "0",
                        "-n", "12", "-t", "2", "--ignore-eos"], capture_output=True, text=True,
                       timeout=300).stdout
    r = subprocess.run([barista_bin, "run", "-m", gguf_path, "--file", str(f), "-n", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_chat_and_system(barista_bin, gguf_path):
    _, raw, _ = gen(barista_bin, "-m", gguf_path, "--temp", "0", n="2")
    _, chat, _ = gen(barista_bin, "-m", gguf_path, "--temp", "0", "--chat", n="2")
    _, sys_, _ = gen(barista_bin, "-m", gguf_path, "--temp", "0", "--chat", "--system",
                     "You are terse.", n="2")
    # the template wraps the prompt; its default system message is replaced
    assert raw < chat and sys_ != chat, (raw, chat, sys_)
    _, nochat, _ = gen(barista_bin, "-m", gguf_path, "--temp", "0", "--chat", "--no-chat", n="2")
    assert nochat == raw


def test_ignore_eos_off_may_stop_early(barista_bin, gguf_path):
    """Without --ignore-eos a chat answer ends at its end-of-turn token, well
    before -n; with it, exactly -n tokens come out."""
    r = run(barista_bin, "-m", gguf_path, "--chat", "-p", "Say hi.", "-n", "200", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert int(STATS.match(r.stderr.strip().splitlines()[-1]).group(3)) < 200
    assert gen(barista_bin, "-m", gguf_path, "--chat", "--temp", "0", prompt="Say hi.",
               n="40")[2] == 40


def test_environment_sets_options_and_flags_win(barista_bin, gguf_path, tmp_path):
    env = env_with(BARISTA_MODEL=gguf_path, BARISTA_TEMP="0", BARISTA_N_PREDICT="4",
                   BARISTA_IGNORE_EOS="true", BARISTA_THREADS="2",
                   BARISTA_PROMPT="Once upon a time")
    r = subprocess.run([barista_bin, "run"], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert int(STATS.match(r.stderr.strip().splitlines()[-1]).group(3)) == 4
    assert r.stdout == gen(barista_bin, "-m", gguf_path, "--temp", "0", n="4")[0]
    # a flag beats the variable, for a number and for the prompt source
    r = subprocess.run([barista_bin, "run", "-n", "2"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert int(STATS.match(r.stderr.strip().splitlines()[-1]).group(3)) == 2
    f = tmp_path / "p.txt"
    f.write_text("1, 2, 3, 4,")
    r = subprocess.run([barista_bin, "run", "-f", str(f)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == gen(barista_bin, "-m", gguf_path, "--temp", "0", n="4",
                           prompt="1, 2, 3, 4,")[0]


@pytest.mark.parametrize("var,value,needle", [
    ("BARISTA_TEMP", "hot", "BARISTA_TEMP"),
    ("BARISTA_TOP_P", "2", "BARISTA_TOP_P"),
    ("BARISTA_N_PREDICT", "0", "BARISTA_N_PREDICT"),
    ("BARISTA_CHAT", "maybe", "BARISTA_CHAT"),
])
def test_bad_environment_is_a_usage_error(barista_bin, gguf_path, var, value, needle):
    r = subprocess.run([barista_bin, "run", "-m", gguf_path, "-p", "hi"], capture_output=True,
                       text=True, timeout=60, env=env_with(**{var: value}))
    assert r.returncode == 2
    assert needle in r.stderr and "usage" in r.stderr, r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--temp", "nan"], "temp"),
    (["--temp", "-1"], "temp"),
    (["--top-p", "1.5"], "top-p"),
    (["--min-p", "x"], "min-p"),
    (["--repeat-penalty", "11"], "repeat-penalty"),
    (["--top-k", "-1"], "top-k"),
    (["--seed", "-2"], "seed"),
    (["-t", "2000"], "threads"),
    (["--ctx", "x"], "ctx"),
    (["-n", "abc"], "n-predict"),
    (["-f", "/dev/null", "-p", "hi"], "one of"),
    (["stray"], "stray"),
])
def test_bad_values_name_the_option(barista_bin, gguf_path, args, needle):
    r = run(barista_bin, "-m", gguf_path, "-p", "hi", *args) if "-p" not in args else \
        run(barista_bin, "-m", gguf_path, *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr, r.stderr


def test_help_lists_every_option_and_variable(barista_bin):
    r = run(barista_bin, "--help")
    assert r.returncode == 0
    for short, long_ in [("-m", "--model"), ("-p", "--prompt"), ("-f", "--file"),
                         ("-n", "--n-predict"), ("-t", "--threads")]:
        assert f"{short}, {long_}" in r.stdout, long_
    for name in ("model", "prompt", "file", "chat", "system", "n-predict", "temp", "top-k",
                 "top-p", "min-p", "repeat-penalty", "seed", "threads", "ctx", "ignore-eos"):
        assert f"--{name}" in r.stdout, name
        assert "env BARISTA_" + name.upper().replace("-", "_") + "\n" in r.stdout, name
