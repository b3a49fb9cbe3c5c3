"""The GGUF reader and writer against gguf-py, and the reader against corrupt files."""
import os
import random
import struct

import gguf
import numpy as np
import pytest

import lowbit
from lowbit import _core


def _gguf_py_view(path):
    """(metadata {key: (type, value)}, tensors {name: (type, shape, bytes)}) as gguf-py reads them."""
    r = gguf.GGUFReader(path)
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        t = f.types[0].name
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            t = ("ARRAY", f.types[-1].name)
        meta[k] = (t, f.contents())
    tensors = {t.name: (int(t.tensor_type), [int(x) for x in t.shape], bytes(t.data.tobytes())) for t in r.tensors}
    return meta, tensors


def _roundtrip(src, dst):
    info = _core.read_gguf(src)
    meta = []
    for key, vtype, etype, value in info["metadata"]:
        meta.append((key, vtype, (etype, value) if vtype == "array" else value))
    tensors = [(t["name"], t["type"], t["shape"], t["data"]) for t in info["tensors"]]
    _core.write_gguf(dst, meta, tensors)


def test_reader_matches_gguf_py(model_path):
    info = _core.read_gguf(model_path)
    meta, tensors = _gguf_py_view(model_path)
    ours = {k.decode(): v for k, _, _, v in info["metadata"]}
    assert set(ours) == set(meta)
    assert ours["general.architecture"] == b"llama"
    assert ours["llama.block_count"] == meta["llama.block_count"][1]
    assert [t.decode() for t in ours["tokenizer.ggml.tokens"][:50]] == meta["tokenizer.ggml.tokens"][1][:50]
    assert len(info["tensors"]) == len(tensors)
    for t in info["tensors"]:
        ty, shape, data = tensors[t["name"].decode()]
        assert (t["type"], t["shape"], t["data"]) == (ty, shape, data)


def test_writer_roundtrip_reproduces_gguf_py_reading(model_path, tmp_path):
    out = str(tmp_path / "copy.gguf")
    _roundtrip(model_path, out)
    assert _gguf_py_view(out) == _gguf_py_view(model_path)


def test_writer_all_value_types(tmp_path):
    path = str(tmp_path / "types.gguf")
    meta = [
        ("u8", "uint8", 250), ("i8", "int8", -100), ("u16", "uint16", 65000), ("i16", "int16", -30000),
        ("u32", "uint32", 4_000_000_000), ("i32", "int32", -2_000_000_000), ("u64", "uint64", 2**63 + 5),
        ("i64", "int64", -(2**62)), ("f32", "float32", 1.5), ("f64", "float64", 1e-300), ("b", "bool", True),
        ("s", "string", "héllo ✓"), ("arr", "array", ("int32", [1, -2, 3])),
        ("nested", "array", ("array", [("string", ["a", "b"]), ("string", ["c"])])),
        ("general.alignment", "uint32", 64),
    ]
    data = np.arange(64, dtype=np.float32)
    _core.write_gguf(path, meta, [("t", 0, [8, 8], data.tobytes())])
    r = gguf.GGUFReader(path)
    assert r.fields["u64"].contents() == 2**63 + 5
    assert r.fields["s"].contents() == "héllo ✓"
    assert r.fields["arr"].contents() == [1, -2, 3]
    assert np.array_equal(r.tensors[0].data.reshape(-1), data)
    back = {k.decode(): v for k, _, _, v in _core.read_gguf(path)["metadata"]}
    assert back["nested"] == [[b"a", b"b"], [b"c"]]
    assert back["f64"] == 1e-300 and back["i8"] == -100 and back["b"] is True
    assert _core.read_gguf(path)["alignment"] == 64


# ---------------------------------------------------------------- bad input

def _write(tmp_path, name, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _header(n_tensors=0, n_kv=0, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv_string(key, value):
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="not found"):
        lowbit.LLM("/nonexistent/model.gguf")


def test_not_gguf(tmp_path):
    p = _write(tmp_path, "x.gguf", b"this is not a gguf file at all" * 10)
    with pytest.raises(lowbit.FormatError, match="not a GGUF file"):
        _core.read_gguf(p)


def test_empty_file(tmp_path):
    with pytest.raises(lowbit.FormatError, match="too small"):
        _core.read_gguf(_write(tmp_path, "e.gguf", b""))


def test_wrong_version(tmp_path):
    with pytest.raises(lowbit.FormatError, match="unsupported GGUF version 7"):
        _core.read_gguf(_write(tmp_path, "v.gguf", _header(version=7)))


def test_absurd_counts(tmp_path):
    with pytest.raises(lowbit.FormatError, match="does not fit"):
        _core.read_gguf(_write(tmp_path, "c.gguf", _header(n_kv=2**60)))
    with pytest.raises(lowbit.FormatError, match="does not fit"):
        _core.read_gguf(_write(tmp_path, "t.gguf", _header(n_tensors=2**62)))


def test_absurd_string_length(tmp_path):
    data = _header(n_kv=1) + struct.pack("<Q", 2**61) + b"key"
    with pytest.raises(lowbit.FormatError, match="absurd|truncated"):
        _core.read_gguf(_write(tmp_path, "s.gguf", data))


def test_tensor_data_past_end(tmp_path):
    name = b"w"
    info = struct.pack("<Q", len(name)) + name + struct.pack("<I", 1) + struct.pack("<q", 1024)
    info += struct.pack("<I", 0) + struct.pack("<Q", 0)
    data = _header(n_tensors=1) + info
    data += b"\0" * (-len(data) % 32) + b"\0" * 100   # 100 bytes of data, tensor needs 4096
    with pytest.raises(lowbit.FormatError, match="past the end of the file"):
        _core.read_gguf(_write(tmp_path, "p.gguf", data))


def test_unknown_architecture(tmp_path):
    data = _header(n_kv=2) + _kv_string("general.architecture", "transmogrifier") + _kv_string("tokenizer.ggml.model", "gpt2")
    with pytest.raises(lowbit.LowbitError, match="unknown model architecture 'transmogrifier'"):
        lowbit.LLM(_write(tmp_path, "a.gguf", data))


def test_truncation_sweep(model_path, tmp_path):
    """Every truncation point in the header region, and a spread over the tensor data,
    gives a clear error, never a crash."""
    with open(model_path, "rb") as f:
        blob = f.read()
    info = _core.read_gguf(model_path)
    header_end = info["data_offset"]
    cuts = sorted(set(list(range(0, 64)) + random.Random(0).sample(range(64, header_end), 150)
                      + [header_end - 1, header_end, header_end + 1, len(blob) // 2, len(blob) - 1]))
    p = str(tmp_path / "trunc.gguf")
    for cut in cuts:
        with open(p, "wb") as f:
            f.write(blob[:cut])
        with pytest.raises(lowbit.FormatError):
            _core.read_gguf(p)


def test_random_byte_flips(model_path, tmp_path):
    """Random corruption of the header either still parses or raises FormatError."""
    with open(model_path, "rb") as f:
        header = bytearray(f.read(_core.read_gguf(model_path)["data_offset"]))
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    p = str(tmp_path / "flip.gguf")
    for _ in range(200):
        data = bytearray(header)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with open(p, "wb") as f:
            f.write(data)
        try:
            _core.Model(p, vocab_only=True)
        except (lowbit.LowbitError, UnicodeDecodeError):
            pass
        except Exception as e:  # anything else is a bug
            raise AssertionError(f"seed {seed}: unexpected {type(e).__name__}: {e}")
