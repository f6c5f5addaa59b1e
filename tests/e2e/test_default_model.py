"""The default model is found from any folder (src/cli/cli_paths.c): from
$BARISTA_MODEL, $BARISTA_MODELS, ./models, models/ next to the binary or in
its parent folder, or the fetch script's cache folder, in that order; when it
is nowhere, the error names every place looked in."""
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STATS = re.compile(r"^prompt: \d+ tokens, [\d.]+ tok/s; generated: (\d+) tokens, [\d.]+ tok/s$")
SLOW = 6.0 if os.environ.get("BARISTA_SANITIZED") == "1" else 1.0


def clean_env(tmp_path, **extra):
    """The environment without any BARISTA_* place to look in, and a HOME with
    no ~/.cache/barista, so only the places a test sets up can match."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BARISTA_") or k in ("BARISTA_CPU", "BARISTA_SANITIZED")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(binary, cwd, env, *args, timeout=300):
    return subprocess.run([binary, "run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


GEN = ("-p", "The capital of France is", "-n", "3", "--temp", "0", "--ignore-eos", "-t", "2")


def assert_generated(r):
    assert r.returncode == 0, r.stderr
    m = STATS.match(r.stderr.strip().splitlines()[-1])
    assert m and int(m.group(1)) == 3, r.stderr


def place_model(folder, gguf_path):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NAME).symlink_to(gguf_path)


def copy_binary(barista_bin, folder):
    """A copy of the binary in `folder`, so that the places next to it are
    under the test's control (build/barista's parent may hold models/)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "barista"
    shutil.copy2(barista_bin, dst)
    return str(dst)


@pytest.fixture
def elsewhere(tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def test_run_from_another_folder_with_barista_models(barista_bin, models_dir, tmp_path, elsewhere):
    r = run(barista_bin, elsewhere, clean_env(tmp_path, BARISTA_MODELS=models_dir), *GEN)
    assert_generated(r)


def test_run_with_barista_model_file(barista_bin, gguf_path, tmp_path, elsewhere):
    r = run(barista_bin, elsewhere, clean_env(tmp_path, BARISTA_MODEL=gguf_path), *GEN)
    assert_generated(r)


def test_flag_beats_barista_model(barista_bin, gguf_path, tmp_path, elsewhere):
    env = clean_env(tmp_path, BARISTA_MODEL=tmp_path / "absent.gguf")
    r = run(barista_bin, elsewhere, env, *GEN)
    assert r.returncode == 1 and "absent.gguf" in r.stderr
    assert_generated(run(barista_bin, elsewhere, env, "-m", gguf_path, *GEN))


def test_run_finds_models_in_the_current_folder(barista_bin, gguf_path, tmp_path, elsewhere):
    place_model(elsewhere / "models", gguf_path)
    assert_generated(run(barista_bin, elsewhere, clean_env(tmp_path), *GEN))


@pytest.mark.parametrize("where", ["bin/models", "models"])
def test_run_finds_models_next_to_the_binary(barista_bin, gguf_path, tmp_path, elsewhere, where):
    """<prefix>/bin/barista finds <prefix>/bin/models and <prefix>/models, as
    build/barista finds the repository's models/."""
    binary = copy_binary(barista_bin, tmp_path / "prefix" / "bin")
    env = clean_env(tmp_path)
    r = run(binary, elsewhere, env, *GEN)
    assert r.returncode == 1, "no model placed yet: the lookup must fail"
    place_model(tmp_path / "prefix" / where, gguf_path)
    assert_generated(run(binary, elsewhere, env, *GEN))


def test_run_finds_models_in_the_fetch_cache(barista_bin, gguf_path, tmp_path, elsewhere):
    binary = copy_binary(barista_bin, tmp_path / "bin")
    place_model(tmp_path / "home" / ".cache" / "barista" / "models", gguf_path)
    assert_generated(run(binary, elsewhere, clean_env(tmp_path), *GEN))
    # $BARISTA_CACHE moves the cache folder, as it does for scripts/fetch-models
    env = clean_env(tmp_path, BARISTA_CACHE=tmp_path / "cache")
    assert run(binary, elsewhere, env, *GEN).returncode == 1
    place_model(tmp_path / "cache" / "models", gguf_path)
    assert_generated(run(binary, elsewhere, env, *GEN))


def test_lookup_order(barista_bin, gguf_path, tmp_path, elsewhere):
    """An unloadable file in an earlier place is used (and fails) even when a
    later place has the real model, so each place is looked at before the next."""
    binary = copy_binary(barista_bin, tmp_path / "prefix" / "bin")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 10)
    models_env = tmp_path / "env-models"
    cwd_models = elsewhere / "models"
    exe_models = tmp_path / "prefix" / "bin" / "models"
    parent_models = tmp_path / "prefix" / "models"
    cache_models = tmp_path / "home" / ".cache" / "barista" / "models"
    order = [models_env, cwd_models, exe_models, parent_models, cache_models]
    env = clean_env(tmp_path, BARISTA_MODELS=models_env)
    for i, first in enumerate(order[:-1]):
        for d in order:
            if (d / NAME).is_symlink():
                (d / NAME).unlink()
        first.mkdir(parents=True, exist_ok=True)
        (first / NAME).symlink_to(junk)
        for later in order[i + 1:]:
            place_model(later, gguf_path)
        r = run(binary, elsewhere, env, *GEN)
        assert r.returncode == 1, f"{first} comes before {order[i + 1:]}: {r.stderr}"
        shown = f"models/{NAME}" if first == cwd_models else str(first / NAME)
        assert r.stderr.startswith(f"barista run: {shown}: "), r.stderr


def test_not_found_names_every_place(barista_bin, tmp_path, elsewhere):
    binary = copy_binary(barista_bin, tmp_path / "prefix" / "bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(binary, elsewhere, clean_env(tmp_path, BARISTA_MODELS=empty), "-p", "hi")
    assert r.returncode == 1
    err = r.stderr
    assert len(err.strip().splitlines()) == 1, err
    places = [f"$BARISTA_MODELS={empty}", "./models", str(tmp_path / "prefix" / "bin" / "models"),
              str(tmp_path / "prefix" / "models"),
              str(tmp_path / "home" / ".cache" / "barista" / "models")]
    at = [err.find(p) for p in places]
    assert all(i >= 0 for i in at), (places, err)
    assert at == sorted(at), "the places are listed in lookup order"
    assert NAME in err and "scripts/fetch-models" in err


def test_run_help_says_the_lookup_order(barista_bin, tmp_path, elsewhere):
    r = run(barista_bin, elsewhere, clean_env(tmp_path), "--help")
    assert r.returncode == 0
    at = [r.stdout.find(s) for s in ("BARISTA_MODEL", "$BARISTA_MODELS/", "./models/",
                                     "binary's folder", "~/.cache/barista/models/")]
    assert all(i >= 0 for i in at) and at == sorted(at), r.stdout


def test_serve_help_from_another_folder(barista_bin, tmp_path, elsewhere):
    r = subprocess.run([barista_bin, "serve", "--help"], cwd=elsewhere, env=clean_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: barista serve")


def test_serve_help_says_the_lookup_order(barista_bin, tmp_path, elsewhere):
    r = subprocess.run([barista_bin, "serve", "--help"], cwd=elsewhere, env=clean_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert "~/.cache/barista/models/" in r.stdout and "binary's folder" in r.stdout


def test_serve_from_another_folder_loads_the_default_model(barista_bin, gguf_path, tmp_path,
                                                           elsewhere):
    """`barista serve` with no -m, started outside the repository, loads the
    model found next to its binary and turns ready."""
    binary = copy_binary(barista_bin, tmp_path / "prefix" / "bin")
    place_model(tmp_path / "prefix" / "models", gguf_path)
    p = subprocess.Popen([binary, "serve", "--port", "0", "--threads", "2"], cwd=elsewhere,
                         env=clean_env(tmp_path), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    reader = threading.Thread(target=lambda: log.extend(p.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 60 * SLOW
        while time.time() < deadline and p.poll() is None and \
                not any("ready on" in line for line in list(log)):
            time.sleep(0.05)
        out = "".join(log)
        assert "ready on" in out, out
        assert str(tmp_path / "prefix" / "models" / NAME) in out, out
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30 * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
