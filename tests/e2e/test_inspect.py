"""`barista inspect` against outside readers.

The GGUF side is compared with the `gguf` package's GGUFReader, the
safetensors side with the `safetensors` package (and the header JSON read
independently for offsets). Exit codes and error lines are checked on missing,
foreign, truncated and hostile files."""
import json
import re
import shutil
import struct
import subprocess

import pytest

# GGUF value type ids -> barista's type names (the id is the index).
VTYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
               "u64", "i64", "f64"]
ERROR_LINE = re.compile(r"^barista inspect: .+: offset \d+: .+\n$")


def run(barista_bin, *args):
    return subprocess.run([barista_bin, "inspect", *args], capture_output=True, timeout=120)


def inspect_json(barista_bin, path):
    p = run(barista_bin, "--json", path)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return json.loads(p.stdout.decode("utf-8"))


def inspect_text(barista_bin, path):
    p = run(barista_bin, path)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode("utf-8")


@pytest.fixture(scope="module")
def gguf_reader(gguf_path):
    from gguf import GGUFReader
    return GGUFReader(gguf_path)


@pytest.fixture(scope="module")
def gguf_doc(barista_bin, gguf_path):
    return inspect_json(barista_bin, gguf_path)


# ---- GGUF vs GGUFReader ------------------------------------------------------

def test_gguf_header(gguf_doc, gguf_reader, gguf_path):
    assert gguf_doc["format"] == "gguf"
    assert gguf_doc["version"] == int(gguf_reader.fields["GGUF.version"].parts[-1][0])
    assert gguf_doc["alignment"] == gguf_reader.alignment
    assert gguf_doc["data_offset"] == gguf_reader.data_offset
    assert gguf_doc["file_size"] == len(open(gguf_path, "rb").read())


def test_gguf_tensors_match_reader(gguf_doc, gguf_reader):
    ref = gguf_reader.tensors
    assert gguf_doc["tensor_count"] == len(ref) == len(gguf_doc["tensors"])
    for mine, t in zip(gguf_doc["tensors"], ref):
        assert mine["name"] == t.name
        assert mine["type"] == t.tensor_type.name
        assert mine["shape"] == [int(x) for x in t.shape]
        assert mine["elements"] == int(t.n_elements)
        assert mine["file_offset"] == int(t.data_offset)
        assert mine["offset"] == int(t.data_offset) - gguf_reader.data_offset
        assert mine["bytes"] == int(t.n_bytes)
    totals = {}
    for t in ref:
        c = totals.setdefault(t.tensor_type.name, {"count": 0, "bytes": 0})
        c["count"] += 1
        c["bytes"] += int(t.n_bytes)
    assert gguf_doc["totals"] == totals
    assert gguf_doc["total_bytes"] == sum(int(t.n_bytes) for t in ref)


def test_gguf_metadata_match_reader(gguf_doc, gguf_reader):
    ref = [(k, f) for k, f in gguf_reader.fields.items() if not k.startswith("GGUF.")]
    assert [m["key"] for m in gguf_doc["metadata"]] == [k for k, _ in ref]
    assert gguf_doc["metadata_count"] == len(ref)
    for m, (key, f) in zip(gguf_doc["metadata"], ref):
        assert m["type"] == VTYPE_NAMES[int(f.types[0])], key
        if m["type"] == "string":
            want = bytes(f.parts[f.data[0]]).decode("utf-8")
            assert m["length"] == len(want.encode())
            if not m["truncated"]:
                assert m["value"] == want, key
            else:
                assert want.startswith(m["value"]), key
        elif m["type"] == "array":
            assert m["element_type"] == VTYPE_NAMES[int(f.types[1])], key
            assert m["length"] == len(f.data), key
            assert m["truncated"] == (len(f.data) > len(m["value"]))
            for i, item in enumerate(m["value"]):
                part = f.parts[f.data[i]]
                if m["element_type"] == "string":
                    assert item == bytes(part).decode("utf-8"), key
                elif m["element_type"] in ("f32", "f64"):
                    assert item == pytest.approx(float(part[0]), rel=1e-6), key
                else:
                    assert item == int(part[0]), key
        elif m["type"] == "bool":
            assert m["value"] == bool(f.parts[f.data[0]][0]), key
        elif m["type"] in ("f32", "f64"):
            assert m["value"] == pytest.approx(float(f.parts[f.data[0]][0]), rel=1e-6), key
        else:
            assert m["value"] == int(f.parts[f.data[0]][0]), key


def test_gguf_text_mode(barista_bin, gguf_path, gguf_reader):
    out = inspect_text(barista_bin, gguf_path)
    assert out.splitlines()[-1] == f"tensors: {len(gguf_reader.tensors)}"
    assert [l for l in out.splitlines() if l.startswith("tensors:")] == \
        [f"tensors: {len(gguf_reader.tensors)}"]
    assert "format:      gguf v3" in out
    assert "tokenizer.ggml.tokens" in out and "49152 items" in out
    # every tensor has a row with its name and type
    rows = {l.split()[0]: l.split()[1] for l in out.splitlines()
            if l.startswith("  ") and len(l.split()) > 2 and l.split()[1] in
            ("F32", "F16", "Q4_1", "Q8_0", "Q4_0", "Q6_K")}
    for t in gguf_reader.tensors:
        assert rows.get(t.name) == t.tensor_type.name


# ---- safetensors vs the safetensors package ---------------------------------

def read_st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return n, json.loads(f.read(n))


def test_safetensors_match_package(barista_bin, safetensors_path):
    from safetensors import safe_open
    doc = inspect_json(barista_bin, safetensors_path)
    hn, header = read_st_header(safetensors_path)
    assert doc["format"] == "safetensors"
    assert doc["header_size"] == hn
    assert doc["data_offset"] == 8 + hn
    mine = {t["name"]: t for t in doc["tensors"]}
    assert len(mine) == doc["tensor_count"] == len(doc["tensors"])
    with safe_open(safetensors_path, framework="numpy") as f:
        keys = list(f.keys())
        assert sorted(mine) == sorted(keys)
        for k in keys:
            sl = f.get_slice(k)
            assert mine[k]["shape"] == list(sl.get_shape()), k
            assert mine[k]["type"] == sl.get_dtype(), k
            begin, end = header[k]["data_offsets"]
            assert mine[k]["offset"] == begin
            assert mine[k]["file_offset"] == 8 + hn + begin
            assert mine[k]["bytes"] == end - begin
        meta = f.metadata() or {}
    assert {m["key"]: m["value"] for m in doc["metadata"]} == meta
    assert all(m["type"] == "string" for m in doc["metadata"])
    # tensors come in data order
    offs = [t["offset"] for t in doc["tensors"]]
    assert offs == sorted(offs)


def test_safetensors_text_mode(barista_bin, safetensors_path):
    from safetensors import safe_open
    with safe_open(safetensors_path, framework="numpy") as f:
        n = len(list(f.keys()))
    out = inspect_text(barista_bin, safetensors_path)
    assert out.splitlines()[-1] == f"tensors: {n}"
    assert "format:      safetensors" in out


# ---- usage and exit codes ------------------------------------------------------

def test_help(barista_bin):
    p = run(barista_bin, "--help")
    assert p.returncode == 0
    assert p.stdout.startswith(b"usage: barista inspect")
    assert b"\"tensor_count\"" in p.stdout  # the JSON schema is documented
    assert p.stderr == b""


@pytest.mark.parametrize("args", [[], ["--bogus"], ["--bogus", "x.gguf"], ["a", "b"], ["-x"]])
def test_usage_errors(barista_bin, args):
    p = run(barista_bin, *args)
    assert p.returncode == 2
    assert b"usage: barista inspect" in p.stderr
    assert p.stdout == b""


def test_missing_file(barista_bin, tmp_path):
    p = run(barista_bin, str(tmp_path / "nope.gguf"))
    assert p.returncode == 1
    assert p.stdout == b""
    line = p.stderr.decode()
    assert line.startswith("barista inspect: ") and line.count("\n") == 1
    assert "nope.gguf" in line


@pytest.mark.parametrize("content", [b"", b"hello, world\n" * 10, b"GGU", b"\x00" * 64])
def test_not_a_model(barista_bin, tmp_path, content):
    path = tmp_path / "not-a-model.bin"
    path.write_bytes(content)
    for args in ([str(path)], ["--json", str(path)]):
        p = run(barista_bin, *args)
        assert p.returncode == 1
        assert p.stdout == b""
        assert ERROR_LINE.match(p.stderr.decode()), p.stderr


def test_truncated_gguf(barista_bin, gguf_path, gguf_reader, tmp_path):
    path = tmp_path / "truncated.gguf"
    shutil.copyfile(gguf_path, path)
    size = path.stat().st_size
    # inside the header, inside the token array, just past the tensor infos, one byte short
    for cut in (10, 30, 1000, 1_000_000, gguf_reader.data_offset + 10, size - 1):
        with open(path, "r+b") as f:
            f.truncate(cut)
        p = run(barista_bin, str(path))
        assert p.returncode == 1, cut
        assert p.stdout == b""
        assert ERROR_LINE.match(p.stderr.decode()), (cut, p.stderr)
        assert str(path) in p.stderr.decode()


def test_truncated_safetensors(barista_bin, safetensors_path, tmp_path):
    data = open(safetensors_path, "rb").read()
    path = tmp_path / "truncated.safetensors"
    for cut in (4, 100, 8 + struct.unpack("<Q", data[:8])[0], len(data) - 1):
        path.write_bytes(data[:cut])
        p = run(barista_bin, str(path))
        assert p.returncode == 1, cut
        assert ERROR_LINE.match(p.stderr.decode()), (cut, p.stderr)


# ---- hostile bytes -----------------------------------------------------------

def gguf_string(b):
    return struct.pack("<Q", len(b)) + b


def hostile_gguf():
    """A valid GGUF whose key, string and tensor name carry terminal escapes,
    control bytes, invalid UTF-8 and a long string."""
    kvs = [
        (b"evil.\x1b[31mred\x1b[0m", 8, gguf_string(b"bell\x07 nul\x00 bad\xff\xfe utf8 \xc3\xa9")),
        (b"long.string", 8, gguf_string(b"x" * 5000)),
        (b"arr", 9, struct.pack("<IQ", 8, 2) + gguf_string(b"\x1b]0;title\x07")
         + gguf_string(b"ok")),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs))
    for k, t, v in kvs:
        out += gguf_string(k) + struct.pack("<I", t) + v
    out += gguf_string(b"t\x1b[2J\xff") + struct.pack("<IQIQ", 1, 8, 0, 0)
    out += b"\x00" * ((32 - len(out) % 32) % 32)
    return out + b"\x00" * 32


def test_hostile_bytes_are_escaped(barista_bin, tmp_path):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(hostile_gguf())
    p = run(barista_bin, str(path))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert b"\x1b" not in out and b"\x07" not in out and b"\x00" not in out
    assert b"\xff" not in out
    text = out.decode("utf-8")  # valid UTF-8 throughout
    assert "\\x1b[31mred" in text
    assert "(5000 bytes)" in text
    assert text.splitlines()[-1] == "tensors: 1"

    p = run(barista_bin, "--json", str(path))
    assert p.returncode == 0, p.stderr
    assert b"\x1b" not in p.stdout  # JSON escapes controls
    doc = json.loads(p.stdout.decode("utf-8"))
    meta = {m["key"]: m for m in doc["metadata"]}
    assert "evil.\x1b[31mred\x1b[0m" in meta
    assert meta["long.string"]["length"] == 5000
    assert meta["long.string"]["truncated"] is True
    assert meta["arr"]["value"][0] == "\x1b]0;title\x07"
    assert doc["tensors"][0]["name"] == "t\x1b[2J\ufffd"
    assert doc["tensors"][0]["bytes"] == 32
