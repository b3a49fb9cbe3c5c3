"""Vocab-only GGUF files for tokenizer conformance tests.

llama.cpp loads a file with a llama architecture header, no tensors and a tokenizer when
asked for vocab_only, so these files let us compare tokenizers that no real model here
uses: an SPM (SentencePiece BPE with byte fallback) vocabulary trained on the fly, and
byte-level BPE vocabularies borrowed from a real model under another tokenizer.ggml.pre.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import gguf

# GGUF tokenizer.ggml.token_type values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPM_SPACE = "\u2581"

# Text the synthetic SPM vocabulary is trained on: prose, accents, code, a little CJK.
SPM_CORPUS = """
The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran
into the forest where the other foxes were waiting for their dinner. It is the best
thing that ever happened in the history of the world, they said, and then they went home.
Tokenizers split text into pieces; the pieces are then mapped to integer ids.
There are many ways to do this: byte pair encoding, unigram models, and word pieces.
Il était une fois une princesse qui vivait dans un château près de la forêt.
Über den Wolken muss die Freiheit wohl grenzenlos sein, sagte der Mann.
def tokenize(text):
    for word in text.split():
        yield word.lower()
return 0; if (x == 1) { y = 2; } else { y = 3; }
Numbers like 12, 345 and 6789 appear in the text, as do dates such as 2024-01-15.
東京は日本の首都です。 我们喜欢学习中文。
"""


def _train_spm_pieces(corpus: str, n_merges: int) -> list[tuple[str, float]]:
    """Tiny SentencePiece-style BPE: returns (piece, score) for characters and merges."""
    words = collections.Counter(SPM_SPACE + w for w in corpus.split())
    chars = collections.Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
    seqs = {w: list(w) for w in words}
    merges: list[str] = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merged = a + b
        merges.append(merged)
        for w in words:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    pieces = [(m, -float(i)) for i, m in enumerate(dict.fromkeys(merges))]
    # characters score below every merge, the most frequent first
    base = -float(len(pieces))
    ordered = sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))
    pieces += [(ch, base - 1.0 - i) for i, (ch, _c) in enumerate(ordered) if ch not in dict(pieces)]
    return pieces


def _writer(path: Path) -> gguf.GGUFWriter:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    return w


def write_vocab_gguf(path: Path, *, model: str, tokens: list[str], token_types: list[int],
                     scores: list[float] | None = None, merges: list[str] | None = None,
                     pre: str | None = None, special_ids: dict[str, int] | None = None,
                     flags: dict[str, bool] | None = None) -> Path:
    """Write a vocab-only GGUF. special_ids keys: bos, eos, unk, pad, eot; flags keys:
    add_bos, add_eos, add_space_prefix (absent keys are not written)."""
    w = _writer(path)
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    setters = {"bos": w.add_bos_token_id, "eos": w.add_eos_token_id, "unk": w.add_unk_token_id,
               "pad": w.add_pad_token_id, "eot": w.add_eot_token_id}
    for key, value in (special_ids or {}).items():
        setters[key](value)
    flag_setters = {"add_bos": w.add_add_bos_token, "add_eos": w.add_add_eos_token,
                    "add_space_prefix": w.add_add_space_prefix}
    for key, value in (flags or {}).items():
        flag_setters[key](value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_spm_vocab(path: Path, n_merges: int = 400, **flags: bool) -> Path:
    """SPM vocabulary: <unk> <s> </s>, 256 byte tokens, chat control tokens, one
    user-defined token, then trained pieces with scores."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [UNKNOWN, CONTROL, CONTROL]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append("<0x%02X>" % b)
        types.append(BYTE)
        scores.append(0.0)
    for text, kind in [("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL), ("<tool>", USER_DEFINED)]:
        tokens.append(text)
        types.append(kind)
        scores.append(0.0)
    for piece, score in _train_spm_pieces(SPM_CORPUS, n_merges):
        if piece not in tokens:
            tokens.append(piece)
            types.append(NORMAL)
            scores.append(score)
    return write_vocab_gguf(path, model="llama", tokens=tokens, token_types=types, scores=scores,
                            special_ids={"bos": 1, "eos": 2, "unk": 0}, flags=flags)


def read_bpe_vocab(src: Path) -> dict:
    """Tokens, types and merges of a byte-level BPE GGUF (read once per file)."""
    return _read_bpe_vocab(str(src))


@functools.lru_cache(maxsize=4)
def _read_bpe_vocab(src: str) -> dict:
    r = gguf.GGUFReader(src)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    types_field = r.fields["tokenizer.ggml.token_type"]
    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "token_types": [int(types_field.parts[i][0]) for i in types_field.data],
        "merges": strings("tokenizer.ggml.merges"),
    }


def write_bpe_variant(path: Path, src: Path, pre: str, user_defined: tuple[str, ...] = ("<filename>",),
                      special_ids: dict[str, int] | None = None, flags: dict[str, bool] | None = None) -> Path:
    """The byte-level BPE vocabulary of `src` under another pre-tokenizer. The tokens in
    `user_defined` become USER_DEFINED, which are split out even without special=True.
    add_bos is left to llama.cpp's default for `pre` unless given in flags."""
    v = read_bpe_vocab(src)
    types = list(v["token_types"])
    for text in user_defined:
        types[v["tokens"].index(text)] = USER_DEFINED
    ids = {"bos": 1, "eos": 2} if special_ids is None else special_ids
    return write_vocab_gguf(path, model="gpt2", pre=pre, tokens=v["tokens"], token_types=types,
                            merges=v["merges"], special_ids=ids, flags=flags)
