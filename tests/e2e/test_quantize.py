"""`barista quantize` against an outside reference.

gguf-py (the `gguf` package, llama.cpp's own Python library) carries numpy
ports of llama.cpp's reference quantizers: every converted tensor of the
default model must have exactly the bytes gguf-py produces from the same
dequantized floats, the file must read back with gguf-py's GGUFReader, and
barista must load and run it. Usage errors exit 2, runtime failures exit 1
and leave no output file."""
import subprocess

import numpy as np
import pytest

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def quantize(barista_bin, *args):
    return subprocess.run([barista_bin, "quantize", *args], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def src_reader(gguf_path):
    from gguf import GGUFReader
    return GGUFReader(gguf_path)


@pytest.mark.parametrize("qtype", TYPES)
def test_bytes_equal_gguf_py_reference(barista_bin, gguf_path, src_reader, qtype, tmp_path,
                                       sanitized):
    import gguf
    from gguf import GGUFReader
    from gguf.quants import dequantize, quantize as ref_quantize

    out = tmp_path / f"m-{qtype}.gguf"
    p = quantize(barista_bin, gguf_path, str(out), qtype)
    assert p.returncode == 0, p.stderr.decode()
    assert b"tensors" in p.stderr
    r = GGUFReader(str(out))
    want = getattr(gguf.GGMLQuantizationType, qtype)
    # metadata: everything copied, file type updated
    src_keys = {f.name for f in src_reader.fields.values()}
    out_keys = {f.name for f in r.fields.values()}
    assert src_keys <= out_keys
    ftype = r.fields["general.file_type"]
    assert int(ftype.parts[ftype.data[0]][0]) == {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9,
                                                  "Q8_0": 7}[qtype]
    assert len(r.tensors) == len(src_reader.tensors)
    checked = 0
    for i, (a, b) in enumerate(zip(src_reader.tensors, r.tensors)):
        assert a.name == b.name and list(a.shape) == list(b.shape)
        if len(a.shape) == 1 or a.shape[1] == 1:
            assert b.tensor_type == a.tensor_type  # norms unchanged
            continue
        if a.name == "token_embd.weight" and qtype != "Q8_0":
            assert b.tensor_type == gguf.GGMLQuantizationType.Q8_0
            continue
        assert b.tensor_type == want, a.name
        # numpy's reference is the slow part: a stride of the 210 matrices
        # covers every kind (q k v o gate up down) in many layers
        if i % (15 if sanitized else 3):
            continue
        x = dequantize(a.data, a.tensor_type).astype(np.float32)
        ref = np.asarray(ref_quantize(x, want)).view(np.uint8).ravel()
        got = np.asarray(b.data).view(np.uint8).ravel()
        assert np.array_equal(ref, got), f"{qtype} {a.name}: bytes differ from gguf-py"
        checked += 1
    assert checked > 0
    # and barista runs it
    run = subprocess.run([barista_bin, "run", "-m", str(out), "-p", "The capital of France is",
                          "-n", "8", "--temp", "0"], capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    assert len(run.stdout.decode().strip()) > 0


def test_pure_quantizes_the_embedding_too(barista_bin, gguf_path, tmp_path):
    from gguf import GGUFReader
    out = tmp_path / "pure.gguf"
    p = quantize(barista_bin, "--pure", gguf_path, str(out), "q4_0")
    assert p.returncode == 0, p.stderr.decode()
    r = GGUFReader(str(out))
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    assert emb.tensor_type.name == "Q4_0"
    run = subprocess.run([barista_bin, "run", "-m", str(out), "-p", "Hello", "-n", "4", "--temp",
                          "0"], capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()


@pytest.mark.parametrize("args,code,needle", [
    ([], 2, b"need IN, OUT and TYPE"),
    (["a.gguf", "b.gguf"], 2, b"need IN, OUT and TYPE"),
    (["a.gguf", "b.gguf", "Q6_K"], 2, b"unknown TYPE 'Q6_K'"),
    (["a.gguf", "a.gguf", "Q8_0"], 2, b"OUT must differ"),
    (["--bogus", "a", "b", "Q8_0"], 2, b"unknown option"),
])
def test_usage_errors(barista_bin, args, code, needle):
    p = quantize(barista_bin, *args)
    assert p.returncode == code
    assert needle in p.stderr


def test_bad_input_fails_without_output(barista_bin, tmp_path):
    out = tmp_path / "o.gguf"
    p = quantize(barista_bin, str(tmp_path / "missing.gguf"), str(out), "Q8_0")
    assert p.returncode == 1 and p.stderr.startswith(b"barista quantize: ")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    p = quantize(barista_bin, str(bad), str(out), "Q8_0")
    assert p.returncode == 1
    assert not out.exists()
    assert not list(tmp_path.glob("o.gguf.tmp*"))


def test_help(barista_bin):
    p = quantize(barista_bin, "--help")
    assert p.returncode == 0 and b"Q5_1" in p.stdout
