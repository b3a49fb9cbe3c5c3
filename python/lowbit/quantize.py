"""`lowbit quantize`: requantize a GGUF model into one of llama.cpp's mixes or a single type.

    lowbit quantize IN.gguf OUT.gguf Q4_K_M [--threads N] [--allow-requantize] [--pure]
                    [--output-type T] [--token-embedding-type T]

Per-tensor type choices follow llama.cpp's `llama-quantize` (src/llama-quant.cpp of the
llama.cpp bundled with llama-cpp-python 0.3.36): which tensors are quantized at all, the
"use more bits" layers of attn_v / ffn_down, the output / tied token embedding, and the
fallbacks for rows whose length is not a multiple of the block size.  The numbers differ
from llama.cpp's only where lowbit's quantizer is better: K-quants and IQ4 use lowbit's
quality quantizer (never a larger weighted error than llama.cpp's per block), the other
formats use the same reference rounding as ggml (byte-identical output).

Tensors are read through a memory map and written as they are quantized, a window of row
chunks at a time spread over a thread pool (the C++ quantizer releases the GIL), so memory
stays bounded by a few chunks whatever the model's size.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import mmap
import os
import re
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np

from . import _core

__all__ = ["FTYPES", "ALIASES", "WEIGHT_TYPES", "QuantizeError", "QuantizeResult", "TensorDesc", "HParams",
           "Planned", "GGUFIndex", "plan_types", "read_input", "resolve_ftype", "quantize_file", "error_weights",
           "weighted_rmse", "file_type_name", "main"]


class QuantizeError(ValueError):
    """A bad input, type or option for `lowbit quantize`."""


# ---------------------------------------------------------------------------- types
# ggml's type ids (GGML_TYPE_*); lowbit's registry uses the same ids and names.
GGML_TYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q8_1": 9,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q8_K": 15,
    "IQ2_XXS": 16, "IQ2_XS": 17, "IQ3_XXS": 18, "IQ1_S": 19, "IQ4_NL": 20, "IQ3_S": 21,
    "IQ2_S": 22, "IQ4_XS": 23, "I8": 24, "I16": 25, "I32": 26, "I64": 27, "F64": 28,
    "IQ1_M": 29, "BF16": 30, "TQ1_0": 34, "TQ2_0": 35, "MXFP4": 39,
}
_TYPE_NAMES = {v: k for k, v in GGML_TYPES.items()}
_FLOAT_TYPES = {"F32", "F16", "BF16"}
_NOT_QUANTIZED = _FLOAT_TYPES | {"I8", "I16", "I32", "I64", "F64"}

# name -> (LLAMA_FTYPE value, default tensor type), as llama.cpp's llama_ftype_get_default_type
FTYPES: dict[str, tuple[int, str]] = {
    "F32": (0, "F32"), "F16": (1, "F16"), "BF16": (32, "BF16"),
    "Q4_0": (2, "Q4_0"), "Q4_1": (3, "Q4_1"), "Q5_0": (8, "Q5_0"), "Q5_1": (9, "Q5_1"), "Q8_0": (7, "Q8_0"),
    "Q2_K": (10, "Q2_K"),
    "Q3_K_S": (11, "Q3_K"), "Q3_K_M": (12, "Q3_K"), "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"), "Q4_K_M": (15, "Q4_K"),
    "Q5_K_S": (16, "Q5_K"), "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"),
    "IQ4_NL": (25, "IQ4_NL"), "IQ4_XS": (30, "IQ4_XS"),
    "TQ1_0": (36, "TQ1_0"), "TQ2_0": (37, "TQ2_0"),
    "MXFP4_MOE": (38, "MXFP4"),
}
# llama-quantize's aliases, plus the bare MXFP4 type name.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "MXFP4": "MXFP4_MOE"}
# the mixes llama.cpp has that lowbit does not offer, and why
_UNSUPPORTED_FTYPES = {
    "Q2_K_S": "it needs an importance matrix, which lowbit quantize does not take yet",
    **{n: "lowbit has no quantizer for the IQ1/IQ2/IQ3 formats" for n in
       ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M")},
}
# tensor types a weight may be written in (--output-type, --token-embedding-type)
WEIGHT_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4")

# ftype values used in the selection rules below (LLAMA_FTYPE_MOSTLY_*)
_F = {k: v[0] for k, v in FTYPES.items()}
_Q2_K_S = 21


def _info(type_name: str) -> dict:
    return _core.type_info(type_name)


def block_size(type_name: str) -> int:
    if type_name in {"I8", "I16", "I32", "I64", "F64"}:
        return 1
    return _info(type_name)["block_size"]


def is_quantized(type_name: str) -> bool:
    return type_name not in _NOT_QUANTIZED


def can_quantize(type_name: str) -> bool:
    try:
        return bool(_info(type_name)["can_quantize"])
    except _core.LowbitError:
        return False


def can_dequantize(type_name: str) -> bool:
    try:
        _info(type_name)
        return True
    except _core.LowbitError:
        return False


def row_bytes(type_name: str, cols: int) -> int:
    info = _info(type_name)
    return cols // info["block_size"] * info["type_size"]


def resolve_ftype(name: str) -> tuple[str, int, str]:
    """(mix name, LLAMA_FTYPE value, default tensor type) for a TYPE argument."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key in FTYPES:
        ftype, default = FTYPES[key]
        if not can_quantize(default):
            raise QuantizeError(f"lowbit cannot quantize to {default}")
        return key, ftype, default
    if key in _UNSUPPORTED_FTYPES:
        raise QuantizeError(f"{name} is not supported: {_UNSUPPORTED_FTYPES[key]}")
    known = ", ".join(list(FTYPES) + list(ALIASES))
    raise QuantizeError(f"unknown quantization type {name!r}; known: {known}")


def file_type_name(path: str) -> str | None:
    """The mix a GGUF file declares in general.file_type (Q4_K_M, Q8_0, ...), or None."""
    for key, _, _, value in _core.read_gguf(path, with_data=False)["metadata"]:
        if key == b"general.file_type":
            return next((name for name, (ftype, _) in FTYPES.items() if ftype == value), None)
    return None


def resolve_tensor_type(name: str, what: str) -> str:
    key = name.strip().upper()
    if key not in GGML_TYPES:
        raise QuantizeError(f"unknown tensor type {name!r} for {what}; known: {', '.join(WEIGHT_TYPES)}")
    if key not in WEIGHT_TYPES or not can_quantize(key):
        raise QuantizeError(f"lowbit cannot quantize weights to {key} ({what}); it can to {', '.join(WEIGHT_TYPES)}")
    return key


# ---- quantization error, measured the way llama.cpp's quantizer measures it ---------------
def error_weights(type_name: str, x: np.ndarray, importance: np.ndarray | None = None) -> np.ndarray:
    """Per-element weights of the squared error llama.cpp's quantizer minimises for a
    K-quant or IQ4 type (rows of x; importance = one imatrix row, or None): its _ref
    path's weights without an imatrix, importance * sqrt(sigma2 + x^2) with one (sigma2
    from the block's mean square; Q6_K uses the importance as it is).  lowbit's quality
    quantizers minimise the same error; other types get uniform weights."""
    x = np.asarray(x, dtype=np.float64)
    if type_name not in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"):
        return np.ones_like(x) if importance is None else np.broadcast_to(np.asarray(importance, np.float64), x.shape)
    block = 32 if type_name == "IQ4_NL" else 256
    xb = x.reshape(x.shape[0], -1, block)
    mean_sq = (xb ** 2).mean(axis=2, keepdims=True)
    if importance is not None:
        ib = np.broadcast_to(np.asarray(importance, np.float64).reshape(1, -1, block), xb.shape)
        if type_name == "Q6_K":
            return np.array(ib).reshape(x.shape)
        sigma2 = mean_sq if type_name == "Q2_K" else 2 * mean_sq
        return (ib * np.sqrt(sigma2 + xb ** 2)).reshape(x.shape)
    if type_name == "Q2_K":
        return np.abs(x)
    if type_name in ("Q4_K", "Q5_K"):
        xs = x.reshape(x.shape[0], -1, 32)
        return (np.sqrt((xs ** 2).mean(axis=2, keepdims=True)) + np.abs(xs)).reshape(x.shape)
    return x ** 2        # Q3_K, Q6_K, IQ4_NL, IQ4_XS


def weighted_rmse(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """sqrt(sum w (x - y)^2 / sum w); uniform weights when None."""
    d2 = (np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2
    w = np.ones_like(d2) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), d2.shape)
    return float(np.sqrt((d2 * w).sum() / w.sum()))



# ---------------------------------------------------------------------------- plan
@dataclasses.dataclass
class TensorDesc:
    name: str
    type: str                   # ggml type name of the source tensor
    ne: tuple[int, ...]         # ggml order: ne[0] is the row length


@dataclasses.dataclass
class HParams:
    arch: str = "llama"
    n_layer: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:   # llama.cpp's LLM_TYPE_70B, the only model type the rules use
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


@dataclasses.dataclass
class Planned:
    desc: TensorDesc
    target: str                 # type to write
    fallback: bool = False      # target replaced because the row length did not fit
    nbytes: int = 0             # bytes written (set when the file is written)


def n_dims(ne: Sequence[int]) -> int:
    """ggml_n_dims: trailing 1s do not count."""
    for i in range(len(ne) - 1, 0, -1):
        if ne[i] > 1:
            return i + 1
    return 1


def _layer_of(name: str) -> int:
    m = re.match(r"blk\.([+-]?\d+)", name)
    return int(m.group(1)) if m else -1


def llama_order(names: Iterable[str]) -> list[str]:
    """llama.cpp's weights order (llama_model_loader's weight_name_comparer): by layer
    number (tensors outside blk.N first), then by name."""
    return sorted(names, key=lambda n: (_layer_of(n), n.encode("utf-8")))


_NO_QUANT_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
    "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
    ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)


def allows_quantization(t: TensorDesc) -> bool:
    """llama.cpp's tensor_allows_quantization: 2-D/3-D weights other than norms, gates of
    experts, positional embeddings and a list of small special tensors."""
    if n_dims(t.ne) < 2:
        return False
    name = t.name
    if not name.endswith("weight"):
        return False
    if any(s in name for s in _NO_QUANT_SUBSTRINGS):
        return False
    return name not in ("position_embd.weight", "token_types.weight")


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _is_attn_v(cat: str) -> bool:
    return cat in ("attn_v", "attn_qkv", "attn_kv_b")


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# llama.cpp's tensor_type_fallback: a type with blocks that fit rows of any multiple of 32
_FALLBACK = {"IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
             "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL",
             "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
             "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def fallback_type(t: TensorDesc, target: str) -> tuple[str, bool]:
    cols = t.ne[0]
    if cols % block_size(target) == 0:
        return target, False
    if target not in _FALLBACK:
        raise QuantizeError(f"{t.name}: rows of {cols} values do not fit {target} (blocks of {block_size(target)}) "
                            f"and llama.cpp defines no fallback for {target}")
    new = _FALLBACK[target]
    if cols % block_size(new) != 0:
        new = "F16"
    return new, True


class _State:
    def __init__(self, hp: HParams, tensors: Sequence[TensorDesc]):
        self.hp = hp
        cats = [category(t.name) for t in tensors]
        self.n_attention_wv = sum(_is_attn_v(c) for c in cats)
        self.tied_embeddings = "output" not in cats
        self.n_ffn = hp.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0

    def layer(self, counter: int, name: str) -> tuple[int, int]:
        if self.hp.n_expert > 1:   # experts are not consecutive: take the layer from the name
            i = _layer_of(name)
            if not 0 <= i < self.hp.n_layer:
                raise QuantizeError(f"cannot tell the layer of {name}")
            return i, self.hp.n_layer
        return counter, self.n_ffn


def _mix_type(qs: _State, t: TensorDesc, new: str, ftype: int, cat: str, output_type: str | None) -> str:
    """llama.cpp's llama_tensor_get_type_impl, for the mixes lowbit offers."""
    hp = qs.hp
    falcon = hp.arch == "falcon"
    if cat == "output" or (qs.tied_embeddings and cat == "token_embd"):
        if output_type is not None:
            return output_type
        if ftype == _F["MXFP4_MOE"]:
            return "Q8_0"
        if falcon or t.ne[0] % block_size(new) != 0:
            return "Q8_0"
        return new if new == "Q8_0" else "Q6_K"
    if ftype == _F["MXFP4_MOE"]:
        experts = len(t.ne) > 2 and t.ne[2] > 1
        if hp.arch == "bailingmoe3":
            experts = experts and cat in ("ffn_up", "ffn_gate", "ffn_down")
        return "MXFP4" if experts else "Q8_0"
    if cat == "token_embd":
        if ftype in (_F["TQ1_0"], _F["TQ2_0"]):
            return "Q4_K"
        return new
    if _is_attn_v(cat):
        i, n = qs.i_attention_wv, qs.n_attention_wv
        if ftype == _F["Q2_K"]:
            new = "Q4_K" if hp.n_gqa >= 4 else "Q3_K"
        elif ftype == _Q2_K_S and hp.n_gqa >= 4:
            new = "Q4_K"
        elif ftype == _F["Q3_K_M"]:
            new = "Q5_K" if i < 2 else "Q4_K"
        elif ftype == _F["Q3_K_L"]:
            new = "Q5_K"
        elif ftype in (_F["IQ4_NL"], _F["IQ4_XS"]) and hp.n_gqa >= 4:
            new = "Q5_K"
        elif ftype in (_F["Q4_K_M"], _F["Q5_K_M"]) and _use_more_bits(i, n):
            new = "Q6_K"
        elif ftype == _F["Q4_K_S"] and i < 4:
            new = "Q5_K"
        if hp.is_70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        if hp.n_expert == 8:
            new = "Q8_0"
        qs.i_attention_wv += 1
        return new
    if cat == "attn_k":
        return "Q8_0" if hp.n_expert == 8 else new
    if cat == "ffn_down":
        i, n = qs.layer(qs.i_ffn_down, t.name)
        if ftype == _F["Q2_K"]:
            new = "Q3_K"
        elif ftype == _Q2_K_S:
            if i < n // 8:
                new = "Q4_K"
        elif ftype == _F["Q3_K_M"]:
            new = "Q5_K" if i < n // 16 else ("Q4_K" if (not falcon or _use_more_bits(i, n)) else "Q3_K")
        elif ftype == _F["Q3_K_L"]:
            new = "Q4_K" if falcon else "Q5_K"
        elif ftype == _F["Q4_K_M"]:
            if falcon:
                new = "Q6_K" if i < n // 16 else ("Q5_K" if _use_more_bits(i, n) else "Q4_K")
            elif _use_more_bits(i, n):
                new = "Q6_K"
        elif i < n // 8 and ftype in (_F["IQ4_NL"], _F["IQ4_XS"]):   # (and no imatrix)
            new = "Q5_K"
        elif ftype == _F["Q5_K_M"] and _use_more_bits(i, n):
            new = "Q6_K"
        elif ftype == _F["Q4_K_S"] and not falcon and i < n // 8:
            new = "Q5_K"
        qs.i_ffn_down += 1
        return new
    if cat == "attn_output":
        if not falcon:
            if hp.n_expert == 8:
                if ftype in (_F["Q2_K"], _F["Q3_K_S"], _F["Q3_K_M"], _F["IQ4_NL"], _F["Q4_K_S"], _F["Q4_K_M"],
                             _F["IQ4_XS"]):
                    new = "Q5_K"
            elif ftype == _F["Q2_K"]:
                new = "Q3_K"
            elif ftype == _F["Q3_K_M"]:
                new = "Q4_K"
            elif ftype == _F["Q3_K_L"]:
                new = "Q5_K"
        elif ftype == _F["Q3_K_L"]:
            new = "Q4_K"
        return new
    if cat == "ffn_gate":
        qs.i_ffn_gate += 1
    elif cat == "ffn_up":
        qs.i_ffn_up += 1
    return new


def plan_types(tensors: Sequence[TensorDesc], hp: HParams, mix: str, *, pure: bool = False,
               output_type: str | None = None, token_embedding_type: str | None = None) -> list[Planned]:
    """The type of every tensor, in llama.cpp's tensor order (the order of the output file)."""
    mix, ftype, default = resolve_ftype(mix)
    by_name = {t.name: t for t in tensors}
    if len(by_name) != len(tensors):
        raise QuantizeError("duplicate tensor names in the input")
    ordered = [by_name[n] for n in llama_order(by_name)]
    qs = _State(hp, ordered)
    out = []
    for t in ordered:
        if not allows_quantization(t):
            out.append(Planned(t, t.type))
            continue
        cat = category(t.name)
        if token_embedding_type is not None and cat == "token_embd":
            new = token_embedding_type
        elif output_type is not None and cat == "output":
            new = output_type
        else:
            new = default
            if not is_quantized(default):
                out.append(Planned(t, new))
                continue
            if not pure:
                new = _mix_type(qs, t, new, ftype, cat, output_type)
        # llama.cpp applies no fallback to the two overrides (and fails on a misfit); lowbit does
        target, fell_back = fallback_type(t, new)
        out.append(Planned(t, target, fell_back))
    return out


# ---------------------------------------------------------------------------- GGUF I/O
_GGUF_MAGIC = b"GGUF"
_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
_SET_KEYS = ("general.quantization_version", "general.file_type")


def _u32_kv(key: str, value: int) -> bytes:
    k = key.encode("utf-8")
    return struct.pack("<Q", len(k)) + k + struct.pack("<II", 4, value)   # 4: GGUF UINT32


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# GGUF value types: fixed sizes and struct codes (8: string, 9: array)
_VSIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_VCODE = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclasses.dataclass
class _InTensor:
    desc: TensorDesc
    type_id: int
    offset: int                 # absolute, in the file
    nbytes: int


class GGUFIndex:
    """The header of a GGUF file, parsed in place over a memory map: each key/value pair's
    raw bytes (copied to the output unchanged), decoded scalar values, and where each
    tensor's data lies.  (gguf-py's GGUFReader builds a numpy view per vocabulary string,
    seconds for a 50k-token vocabulary; this takes milliseconds.)"""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            try:
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as e:   # empty file
                raise QuantizeError(f"{path} is not a GGUF file ({e})") from e
        self.data = np.frombuffer(self.map, dtype=np.uint8)
        try:
            self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, OverflowError) as e:
            raise QuantizeError(f"{path} is not a valid GGUF file (truncated or corrupt header: {e})") from e

    def _parse(self) -> None:
        m = self.map
        if m[:4] != _GGUF_MAGIC:
            raise QuantizeError(f"{self.path} is not a GGUF file (bad magic)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        if version not in (2, 3):
            raise QuantizeError(f"{self.path}: GGUF version {version} is not supported")
        off = 24
        self.kv: list[tuple[str, bytes]] = []        # (key, raw bytes of the whole pair)
        self.values: dict[str, object] = {}
        for _ in range(n_kv):
            start = off
            key, off = self._str(off)
            (vtype,) = struct.unpack_from("<I", m, off)
            off += 4
            value, off = self._value(vtype, off)
            self.values[key] = value
            self.kv.append((key, bytes(m[start:off])))
        infos = []
        for _ in range(n_tensors):
            name, off = self._str(off)
            (nd,) = struct.unpack_from("<I", m, off)
            ne = struct.unpack_from(f"<{nd}Q", m, off + 4)
            type_id, toff = struct.unpack_from("<IQ", m, off + 4 + 8 * nd)
            off += 4 + 8 * nd + 12
            infos.append((name, tuple(int(x) for x in ne), type_id, toff))
        align = self.values.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise QuantizeError(f"{self.path}: bad general.alignment {align!r}")
        self.alignment = align
        base = _pad(off, align)
        self.tensors: list[_InTensor] = []
        for name, ne, type_id, toff in infos:
            tname = _TYPE_NAMES.get(type_id, f"type{type_id}")
            desc = TensorDesc(name, tname, ne)
            if type_id in _TYPE_NAMES and can_dequantize(tname):
                nbytes = _nbytes(tname, ne)
            else:
                nbytes = _foreign_nbytes(type_id, ne)
            if base + toff + nbytes > len(m):
                raise QuantizeError(f"{self.path}: tensor {name} lies beyond the end of the file (truncated?)")
            self.tensors.append(_InTensor(desc, type_id, base + toff, nbytes))

    def _str(self, off: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self.map, off)
        if off + 8 + n > len(self.map):
            raise IndexError("string beyond the end of the file")
        return bytes(self.map[off + 8:off + 8 + n]).decode("utf-8"), off + 8 + n

    def _value(self, vtype: int, off: int):
        m = self.map
        if vtype in _VSIZE:
            return struct.unpack_from("<" + _VCODE[vtype], m, off)[0], off + _VSIZE[vtype]
        if vtype == 8:
            (n,) = struct.unpack_from("<Q", m, off)
            return bytes(m[off + 8:off + 8 + n]), off + 8 + n
        if vtype == 9:
            etype, n = struct.unpack_from("<IQ", m, off)
            off += 12
            if etype in _VSIZE:
                size = _VSIZE[etype] * n
                vals = list(struct.unpack_from(f"<{n}{_VCODE[etype]}", m, off)) if n <= 4096 else None
                return vals, off + size
            if etype == 8:
                unpack = struct.unpack_from
                for _ in range(n):
                    off += 8 + unpack("<Q", m, off)[0]
                if off > len(m):
                    raise IndexError("array beyond the end of the file")
                return None, off
            raise QuantizeError(f"{self.path}: unsupported GGUF array element type {etype}")
        raise QuantizeError(f"{self.path}: unknown GGUF value type {vtype}")

    def close(self) -> None:
        self.data = None
        try:
            self.map.close()
        except BufferError:   # a numpy view still alive; the map goes with it
            pass


def _foreign_nbytes(type_id: int, ne: Sequence[int]) -> int:
    """Size of a tensor of a type lowbit does not know, from gguf-py's table."""
    import gguf

    try:
        bs, ts = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
    except (ValueError, KeyError) as e:
        raise QuantizeError(f"unknown tensor type id {type_id}") from e
    return ne[0] // bs * ts * int(math.prod(ne[1:]))


def read_input(path: str) -> tuple[GGUFIndex, HParams]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input path is a directory, not a GGUF file: {path}")
    idx = GGUFIndex(path)
    arch = idx.values.get("general.architecture")
    if not isinstance(arch, bytes):
        raise QuantizeError(f"{path}: general.architecture is missing")
    arch = arch.decode("utf-8", errors="replace")

    def num(key: str, default: int = 0) -> int:
        v = idx.values.get(f"{arch}.{key}", default)
        if isinstance(v, list):
            v = v[0] if v else default
        return int(v) if isinstance(v, (int, float)) else default

    n_head = num("attention.head_count")
    hp = HParams(arch=arch, n_layer=num("block_count"), n_head=n_head,
                 n_head_kv=num("attention.head_count_kv", n_head), n_expert=num("expert_count"))
    return idx, hp


def _metadata_bytes(idx: GGUFIndex, ftype: int) -> tuple[bytes, int]:
    """The input's key/value pairs, raw (types and bytes kept exactly), with
    general.quantization_version and general.file_type set as llama.cpp sets them (moved
    to the end, as its gguf_set_val_* does) and the split keys dropped."""
    out = [raw for key, raw in idx.kv if key not in _SPLIT_KEYS and key not in _SET_KEYS]
    out.append(_u32_kv("general.quantization_version", 2))
    out.append(_u32_kv("general.file_type", ftype))
    return b"".join(out), len(out)


def _tensor_info_bytes(name: str, ne: Sequence[int], type_id: int, offset: int) -> bytes:
    n = name.encode("utf-8")
    return (struct.pack("<Q", len(n)) + n + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
            + struct.pack("<IQ", type_id, offset))


# ---------------------------------------------------------------------------- conversion
def _to_f32(type_name: str, raw: np.ndarray, n: int) -> np.ndarray:
    if type_name == "F32":
        return np.frombuffer(raw, dtype=np.float32, count=n)
    return _core.dequantize(type_name, np.ascontiguousarray(raw), n)


def _nbytes(type_name: str, ne: Sequence[int]) -> int:
    return row_bytes(type_name, ne[0]) * int(math.prod(ne[1:]))


@dataclasses.dataclass
class QuantizeResult:
    path: str
    mix: str
    ftype: int
    tensors: list[Planned]
    n_params: int
    bytes_in: int
    bytes_out: int
    n_fallback: int
    seconds: float

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes_out / max(self.n_params, 1)


def quantize_file(src: str, dst: str, type_name: str, *, threads: int | None = None, allow_requantize: bool = False,
                  pure: bool = False, output_type: str | None = None, token_embedding_type: str | None = None,
                  log: Callable[[str], None] | None = None, chunk_values: int = 1 << 17) -> QuantizeResult:
    """Quantizes the GGUF file src into dst; see the module docstring."""
    t0 = time.perf_counter()
    mix, ftype, _ = resolve_ftype(type_name)
    if output_type is not None:
        output_type = resolve_tensor_type(output_type, "--output-type")
    if token_embedding_type is not None:
        token_embedding_type = resolve_tensor_type(token_embedding_type, "--token-embedding-type")
    threads = threads if threads is not None else (os.cpu_count() or 1)
    if threads < 1:
        raise QuantizeError("--threads must be at least 1")
    idx, hp = read_input(src)
    try:
        plan = _write(idx, hp, src, dst, mix, ftype, threads, allow_requantize, pure, output_type,
                      token_embedding_type, log, chunk_values)
    finally:
        idx.close()
    n_params = sum(int(math.prod(p.desc.ne)) for p in plan)
    bytes_in = sum(t.nbytes for t in idx.tensors)
    bytes_out = sum(p.nbytes for p in plan)
    n_fallback = sum(p.fallback for p in plan)
    res = QuantizeResult(dst, mix, ftype, plan, n_params, bytes_in, bytes_out, n_fallback, time.perf_counter() - t0)
    if log:
        log(f"model size  = {bytes_in / 2**20:8.2f} MiB ({8.0 * bytes_in / max(n_params, 1):.2f} BPW)")
        log(f"quant size  = {bytes_out / 2**20:8.2f} MiB ({res.bits_per_weight:.2f} BPW)")
        if n_fallback:
            log(f"{n_fallback} of {len(plan)} tensor(s) needed a fallback type (rows not a multiple of the block size)")
        log(f"quantized to {mix} in {res.seconds:.1f} s")
    return res


def _write(idx: GGUFIndex, hp: HParams, src: str, dst: str, mix: str, ftype: int, threads: int,
           allow_requantize: bool, pure: bool, output_type: str | None, token_embedding_type: str | None,
           log: Callable[[str], None] | None, chunk_values: int) -> list[Planned]:
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise QuantizeError("the output file must not be the input file")
    by_name = {t.desc.name: t for t in idx.tensors}
    plan = plan_types([t.desc for t in idx.tensors], hp, mix, pure=pure, output_type=output_type,
                      token_embedding_type=token_embedding_type)

    # check everything before writing anything
    for p in plan:
        if p.target == p.desc.type:
            continue
        if p.target in _NOT_QUANTIZED - _FLOAT_TYPES or p.desc.type in _NOT_QUANTIZED - _FLOAT_TYPES:
            raise QuantizeError(f"{p.desc.name}: cannot convert {p.desc.type} to {p.target}")
        if is_quantized(p.desc.type) and not allow_requantize:
            raise QuantizeError(f"{p.desc.name} is {p.desc.type}: requantizing a quantized tensor loses quality; "
                                f"pass --allow-requantize to do it anyway (or start from an F32/F16/BF16 file)")
        if p.desc.type not in GGML_TYPES or not can_dequantize(p.desc.type):
            raise QuantizeError(f"{p.desc.name}: lowbit cannot read tensors of type {p.desc.type}")
        if not can_quantize(p.target):
            raise QuantizeError(f"{p.desc.name}: lowbit cannot quantize to {p.target}")

    align = idx.alignment
    kv, n_kv = _metadata_bytes(idx, ftype)
    infos, offset = [], 0
    for p in plan:
        t = by_name[p.desc.name]
        same = p.target == p.desc.type
        p.nbytes = t.nbytes if same else _nbytes(p.target, p.desc.ne)
        infos.append(_tensor_info_bytes(p.desc.name, p.desc.ne, t.type_id if same else GGML_TYPES[p.target], offset))
        offset += _pad(p.nbytes, align)

    tmp = dst + ".tmp"
    try:
        with open(tmp, "wb") as f, ThreadPoolExecutor(max_workers=threads) as pool:
            f.write(_GGUF_MAGIC + struct.pack("<IQQ", 3, len(plan), n_kv))
            f.write(kv)
            f.write(b"".join(infos))
            f.write(b"\0" * (_pad(f.tell(), align) - f.tell()))
            for i, p in enumerate(plan):
                t = by_name[p.desc.name]
                raw = idx.data[t.offset:t.offset + t.nbytes]
                start = f.tell()
                if p.target == p.desc.type:
                    step = 1 << 26
                    for o in range(0, len(raw), step):
                        f.write(raw[o:o + step].tobytes())
                else:
                    _convert(pool, threads, f, raw, p.desc, p.target, chunk_values)
                written = f.tell() - start
                if written != p.nbytes:
                    raise QuantizeError(f"{p.desc.name}: wrote {written} bytes, expected {p.nbytes}")
                f.write(b"\0" * (_pad(p.nbytes, align) - p.nbytes))
                del raw
                if log:
                    shape = ", ".join(f"{x:6d}" for x in p.desc.ne)
                    what = (f"converting to {p.target}{' (fallback)' if p.fallback else ''} .. "
                            if p.target != p.desc.type else "")
                    log(f"[{i + 1:4d}/{len(plan):4d}] {p.desc.name:36s} - [{shape}], type = {p.desc.type:>6s}, "
                        f"{what}size = {t.nbytes / 2**20:8.3f} MiB -> {p.nbytes / 2**20:8.3f} MiB")
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return plan


def _convert(pool: ThreadPoolExecutor, threads: int, f, raw: np.ndarray, desc: TensorDesc, target: str,
             chunk_values: int) -> None:
    """Converts one tensor row chunk by row chunk, writing the chunks in order; at most
    2 × threads chunks are in flight, so memory stays bounded."""
    cols = desc.ne[0]
    rows = int(math.prod(desc.ne[1:]))
    src_rb = row_bytes(desc.type, cols)
    rows_per_chunk = max(1, chunk_values // max(cols, 1))

    def job(r0: int, r1: int) -> np.ndarray:
        x = _to_f32(desc.type, raw[r0 * src_rb:r1 * src_rb], (r1 - r0) * cols).reshape(r1 - r0, cols)
        return _core.quantize(target, x, reference=False)

    pending = []
    for r0 in range(0, rows, rows_per_chunk):
        pending.append(pool.submit(job, r0, min(rows, r0 + rows_per_chunk)))
        if len(pending) >= 2 * threads:
            f.write(pending.pop(0).result().tobytes())
    for fut in pending:
        f.write(fut.result().tobytes())


# ---------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    mixes = ", ".join(FTYPES)
    p = argparse.ArgumentParser(
        prog="lowbit quantize",
        description="Quantize a GGUF model as llama.cpp's llama-quantize does (same per-tensor type choices), "
                    "with lowbit's quantizers.",
        epilog=f"TYPE: one of {mixes}; aliases: " + ", ".join(f"{k}={v}" for k, v in ALIASES.items())
        + ".  With --pure every quantizable tensor gets TYPE's base type (Q4_K_M: Q4_K), except where rows "
          "do not fit its blocks.",
    )
    p.add_argument("input", help="GGUF model (F32/F16/BF16, or quantized with --allow-requantize)")
    p.add_argument("output", help="GGUF file to write")
    p.add_argument("type", help="quantization mix or type, e.g. Q4_K_M, Q8_0, IQ4_NL")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--allow-requantize", action="store_true",
                   help="allow quantized input tensors (dequantized first; this loses quality)")
    p.add_argument("--pure", action="store_true",
                   help="no mix: every quantizable tensor gets the base type (fallbacks still apply)")
    p.add_argument("--output-type", default=None, metavar="T", help="type of output.weight (e.g. Q8_0)")
    p.add_argument("--token-embedding-type", default=None, metavar="T", help="type of token_embd.weight")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    log = None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        quantize_file(a.input, a.output, a.type, threads=a.threads, allow_requantize=a.allow_requantize,
                      pure=a.pure, output_type=a.output_type, token_embedding_type=a.token_embedding_type, log=log)
    except (QuantizeError, FileNotFoundError, IsADirectoryError, _core.LowbitError, OSError) as e:
        print(f"lowbit quantize: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
