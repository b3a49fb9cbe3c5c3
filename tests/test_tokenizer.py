"""Tokenizer properties that need no oracle: robustness, streaming, round trips, errors.
(Identity with llama.cpp is in conformance/test_tokenizer_conformance.py.)"""
import random

import pytest

import lowbit
from lowbit import LLM, _core

from conformance.synthetic_vocab import write_spm_vocab, write_vocab_gguf

EMOJI = "\U0001f389"  # 4 UTF-8 bytes

ROUND_TRIP_TEXTS = [
    "Hello world",
    "  two leading spaces, two trailing  ",
    "The quick brown fox jumps over the lazy dog. It's John's; we'll see.",
    "Héllo, naïve café — Straße, e\u0301",
    "你好，世界！日本語のテキスト。한국어.",
    f"emoji {EMOJI} \U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7",
    "def f(x):\n\treturn x  +  1\n\n\n",
    "1 12 123 1234 1234567890123456789 3.14159",
    "a\t\t\tb    c\n\n\nd\r\ne\u00a0f\u3000g",
    "\n",
]

CHATML = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok(model_path):
    return LLM(model_path, vocab_only=True)


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    path = write_spm_vocab(tmp_path_factory.mktemp("spm") / "spm.gguf")
    return LLM(str(path), vocab_only=True)


def gpt2_char(byte: int) -> str:
    """GPT-2's printable stand-in for a byte (the text of that byte's token)."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if byte in printable:
        return chr(byte)
    return chr(256 + [b for b in range(256) if b not in printable].index(byte))


def byte_token(tok, byte: int) -> int:
    token = tok.model.find_token(gpt2_char(byte))
    assert token >= 0
    return token


# ---------------------------------------------------------------------------------------
# invalid input


INVALID_UTF8 = [
    b"\xff",
    b"\x80\x80\x80",
    b"abc\xff\xfe def",
    b"\xc3( \xe2\x82 end\x80",
    b"\xed\xa0\x80\xc0\x80\xe0\x80\x80",  # surrogate, overlongs
    b"\xf5\x80\x80\x80 \xf4\x90\x80\x80 \xf7\xbf\xbf\xbf",  # above U+10FFFF (llama.cpp aborts on these)
    b"truncated \xf0\x9f\x98",
    b"\xfe" * 1000,
    b"<|im_start|\xff>",
]


@pytest.mark.parametrize("special", [False, True])
def test_invalid_utf8_does_not_crash(tok, spm, special):
    rng = random.Random(7)
    samples = INVALID_UTF8 + [bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))) for _ in range(300)]
    for model in (tok, spm):
        for data in samples:
            ids = model.tokenize(data, special=special)
            assert all(0 <= t < model.n_vocab for t in ids)
            model.detokenize(ids, special=special)


def test_invalid_bytes_read_as_replacement_characters(tok):
    """As in llama.cpp, each byte that starts no valid sequence is one U+FFFD."""
    assert tok.tokenize(b"a\xffb") == tok.tokenize("a\ufffdb")
    assert tok.tokenize(b"x\xf5\x80\x80\x80y") == tok.tokenize("x" + "\ufffd" * 4 + "y")
    assert tok.tokenize(b"end\xe2\x82") == tok.tokenize("end\ufffd\ufffd")


def test_spm_byte_fallback_round_trips_any_bytes(spm):
    """SPM falls back to <0xXX> tokens, so bytes come back unchanged (BOS drops the space
    the tokenizer put in front). Not with spaces: SPM writes them as U+2581 before
    splitting into characters, and a broken sequence next to one swallows part of it."""
    rng = random.Random(3)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))).replace(b" ", b"")
        data = data.replace(b"\xe2\x96\x81", b"")
        assert spm.detokenize(spm.tokenize(data, add_bos=True)) == data


# ---------------------------------------------------------------------------------------
# streaming


def stream(tok, ids, special=False):
    decoder = _core.StreamDecoder(tok.model, special)
    chunks = [decoder.push(t) for t in ids]
    return chunks, decoder.flush()


def test_stream_never_splits_a_character(tok):
    ids = [byte_token(tok, b) for b in EMOJI.encode()]
    chunks, rest = stream(tok, ids)
    assert chunks == [b"", b"", b"", EMOJI.encode()]
    assert rest == b""


def test_stream_emits_only_complete_utf8(tok):
    text = " ".join(ROUND_TRIP_TEXTS) + CHATML
    ids = tok.tokenize(text, special=True)
    assert len(tok.tokenize(EMOJI)) > 1  # the emoji is split across tokens here
    for special in (False, True):
        chunks, rest = stream(tok, ids, special)
        for chunk in chunks:
            chunk.decode("utf-8")  # strict: raises on a partial character
        assert b"".join(chunks) + rest == tok.detokenize(ids, special=special)


def test_stream_replaces_invalid_bytes(tok):
    f0, a = byte_token(tok, 0xF0), byte_token(tok, ord("a"))
    assert stream(tok, [f0, a]) == ([b"", "\ufffda".encode()], b"")
    assert stream(tok, [f0]) == ([b""], "\ufffd".encode())  # incomplete at the end


def test_stream_matches_python_replace(tok):
    """Any byte sequence comes out as Python's bytes.decode('utf-8', 'replace')."""
    rng = random.Random(11)
    # (the vocabulary has no tokens for bytes that never occur in UTF-8, like 0xC0 or 0xFF)
    interesting = [0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0x9F, 0xA0, 0x8F, 0x90]
    for _ in range(500):
        data = bytes(rng.choice(interesting) for _ in range(rng.randint(0, 12)))
        chunks, rest = stream(tok, [byte_token(tok, b) for b in data])
        assert b"".join(chunks) + rest == data.decode("utf-8", "replace").encode("utf-8"), data


# ---------------------------------------------------------------------------------------
# round trips and special tokens


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_round_trip(tok, text):
    ids = tok.tokenize(text, add_bos=False)
    assert tok.detokenize(ids) == text.encode("utf-8")
    assert tok.tokenize(tok.detokenize(ids), add_bos=False) == ids


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_spm_round_trip(spm, text):
    ids = spm.tokenize(text, add_bos=True)
    assert ids[0] == spm.model.bos
    assert spm.detokenize(ids) == text.encode("utf-8")


def test_control_tokens_are_text_unless_special(tok):
    im_start = tok.model.find_token("<|im_start|>")
    as_text = tok.tokenize(CHATML, special=False)
    assert im_start not in as_text
    assert tok.detokenize(as_text) == CHATML.encode()
    parsed = tok.tokenize(CHATML, special=True)
    assert parsed[0] == im_start
    assert tok.detokenize(parsed, special=True) == CHATML.encode()
    assert tok.detokenize(parsed, special=False) == CHATML.replace("<|im_start|>", "").replace("<|im_end|>", "").encode()


def test_end_of_generation_tokens(tok):
    m = tok.model
    assert m.is_eog(m.eos)
    assert m.is_eog(m.find_token("<|im_end|>"))
    assert m.is_eog(m.find_token("<|endoftext|>"))
    assert not m.is_eog(m.find_token("<|im_start|>"))
    assert not m.is_eog(tok.tokenize("Hello")[0])


def test_empty_text(tok, spm):
    assert tok.tokenize("", add_bos=False) == []
    assert spm.tokenize("", add_bos=False) == []
    assert spm.tokenize("", add_bos=True) == [spm.model.bos]
    assert tok.detokenize([]) == b""


# ---------------------------------------------------------------------------------------
# errors


def test_out_of_range_ids_raise(tok):
    n = tok.n_vocab
    for bad in (n, n + 1000, -1, -(2**31)):
        with pytest.raises(lowbit.LowbitError):
            tok.token_to_piece(bad)
        with pytest.raises(lowbit.LowbitError):
            tok.detokenize([0, bad])
        with pytest.raises(lowbit.LowbitError):
            _core.StreamDecoder(tok.model).push(bad)


def write_bad_vocab(path, **overrides):
    args = dict(model="gpt2", pre="gpt-2", tokens=["a", "b", "ab"], token_types=[1, 1, 1], merges=["a b"],
                special_ids={"bos": 0, "eos": 1})
    args.update(overrides)
    return str(write_vocab_gguf(path, **args))


@pytest.mark.parametrize("overrides, message", [
    (dict(tokens=["a", "b", "a"]), "duplicate"),
    (dict(merges=["a c"]), "unknown token"),
    (dict(merges=["ab"]), "merge"),
    (dict(special_ids={"bos": 0, "eos": 7}), "eos"),
    (dict(token_types=[1, 1]), "token types"),
])
def test_malformed_vocabulary_is_a_format_error(tmp_path, overrides, message):
    with pytest.raises(lowbit.FormatError, match=message):
        LLM(write_bad_vocab(tmp_path / "bad.gguf", **overrides), vocab_only=True)


def test_unsupported_tokenizer_is_an_error(tmp_path):
    with pytest.raises(lowbit.LowbitError, match="bert"):
        LLM(write_bad_vocab(tmp_path / "bert.gguf", model="bert"), vocab_only=True)
    with pytest.raises(lowbit.LowbitError, match="no-such-pre"):
        LLM(write_bad_vocab(tmp_path / "pre.gguf", pre="no-such-pre"), vocab_only=True)
