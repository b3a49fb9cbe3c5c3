"""Tokenizer conformance: token ids, pieces and detokenized bytes identical to llama.cpp.

The oracle is llama-cpp-python loading the same GGUF with vocab_only=True. Besides the
default model (byte-level BPE, pre-tokenizer "smollm") we build vocab-only files for the
other tokenizers: a SentencePiece vocabulary with byte fallback, and the default model's
BPE vocabulary under other tokenizer.ggml.pre values (llama-bpe, gpt-2, qwen2, ...).
"""
import ctypes
import random

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lowbit import LLM  # noqa: E402

from .synthetic_vocab import write_bpe_variant, write_spm_vocab  # noqa: E402

TEXTS = [
    "",
    " ",
    "   ",
    "Hello world",
    " Hello world",
    "Hello world ",
    "   leading and trailing spaces   ",
    "The quick brown fox jumps over the lazy dog. The dog wasn't amused; the fox was.",
    "I'm sure you'll see they've done it, haven't they? It's John's. DON'T SHOUT, WE'LL HEAR YOU'RE HERE",
    "Héllo, naïve café, Ünïcödé — façade, crème brûlée. Ça va? ¿Qué tal? Straße, e\u0301",
    "你好，世界！今天天气很好。日本語のテキストとカタカナ。한국어 텍스트입니다.",
    "Привет мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם नमस्ते दुनिया สวัสดีชาวโลก",
    "I \u2764\ufe0f emoji \U0001f389\U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7!",
    "def f(x):\n\treturn x  +  1\n\n\n    if x == 0:  # tab\tand  spaces\n        pass\n",
    'int main() {\n    printf("%d\\n", 42);\n    return 0;\n}\n',
    "a\t\t\tb    c\n\n\nd\r\ne\u00a0f\u3000g\u2003h \u0085i",
    "1 12 123 1234 12345 1234567890123456789",
    "3.14159, 2.71828 and 1,000,000 (or 1e-9) - $5.99 + 10% = ?",
    "\u0663\u0664\u0665 \u00bd \u00b2 \u216b \u2460 \uff11\uff12\uff13",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more<|im_start|>",
    "<|im_start <|im_end|",
    "<s>Hello</s> <unk> <tool>call</tool> <filename>a.py",
    "\n",
    "\n\n\n",
    "line\n",
    "   \n  \t \r\n",
    "'s 't 're 've 'm 'll 'd 'S 'LL",
    "ﬁ ﬂ Ａｂｃ ！？ 「引用」 ‘quotes’ “double” … · • → ∑ ∞ ≤ © ™ € £ ¥",
    "word " * 300,
]

# Invalid UTF-8, decoded leniently by both (llama.cpp aborts on 4-byte sequences above
# U+10FFFF, so none of those here).
BAD_UTF8 = [
    b"abc\xff\xfe def",
    b"\xc3( \xe2\x82 end\x80",
    b"\xed\xa0\x80 surrogate \xc0\x80 overlong \xe0\x80\x80",
    b"truncated \xf0\x9f\x98",
    b"\xf8\x88\x80\x80\x80 five bytes",
]

# Codepoints that exercise the pre-tokenizers' categories and whitespace rules.
ALPHABET = [" ", " ", " ", "\t", "\n", "\r", "\v", "\u00a0", "\u3000", "\u1680", "\u0085", "a", "Z", "é", "\u0301",
            "1", "2", "\u0663", "\u00bd", ".", ",", "$", "`", "+", "<", "|", "'", "'", "s", "L", "l", "e", "r",
            "\u4f60", "\u4e00", "\ud55c", "\U0001f600", "\x00", "\u0800", "\u0378", "\ue000", "\uff01", "\u2018",
            "\u3002", "\u00b5", "-", "_", "\u200d", "<|im_start|>", "<|im_end|>", "<tool>", "<s>"]

# (name, builder) -> a GGUF path; "model" is the default model itself.
VOCABS = ["model", "spm", "spm-no-prefix", "llama-bpe", "gpt-2", "default", "qwen2", "deepseek-llm",
          "deepseek-coder", "falcon"]


class Peer:
    """llama.cpp's tokenizer through llama-cpp-python."""

    def __init__(self, path):
        self.llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

    def tokenize(self, data: bytes, add_bos: bool, special: bool) -> list[int]:
        return self.llm.tokenize(data, add_bos=add_bos, special=special)

    def piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, ids: list[int], special: bool) -> bytes:
        """Llama.detokenize, with a buffer that fits every piece (its own holds 32 bytes,
        and the default model has longer tokens)."""
        out = b"".join(self.piece(t, special) for t in ids)
        if ids and ids[0] == self.llm.token_bos() and out[:1] == b" ":
            out = out[1:]
        return out


@pytest.fixture(scope="session")
def vocab_files(model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocabs")
    files = {"model": model_path}

    def build(name):
        if name not in files:
            path = folder / f"{name}.gguf"
            if name == "spm":
                write_spm_vocab(path)
            elif name == "spm-no-prefix":
                write_spm_vocab(path, add_space_prefix=False, add_eos=True)
            else:
                write_bpe_variant(path, model_path, name)
            files[name] = str(path)
        return files[name]

    return build


@pytest.fixture(scope="session", params=VOCABS)
def pair(request, vocab_files):
    path = vocab_files(request.param)
    return LLM(path, vocab_only=True), Peer(path)


def as_bytes(text) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("add_bos", [False, True])
def test_tokenize_identical(pair, add_bos, special):
    ours, peer = pair
    for text in TEXTS + BAD_UTF8:
        data = as_bytes(text)
        assert ours.tokenize(data, add_bos=add_bos, special=special) == peer.tokenize(data, add_bos, special), text


def test_str_and_bytes_agree(pair):
    ours, _ = pair
    for text in TEXTS:
        assert ours.tokenize(text, special=True) == ours.tokenize(text.encode("utf-8"), special=True)


@pytest.mark.parametrize("special", [False, True])
def test_detokenize_identical(pair, special):
    ours, peer = pair
    for text in TEXTS + BAD_UTF8:
        ids = peer.tokenize(as_bytes(text), True, special)
        expected = peer.detokenize(ids, special)
        assert ours.detokenize(ids, special=special) == expected, text
        if all(len(peer.piece(t, special)) <= 32 for t in ids):  # within Llama.detokenize's buffer
            assert peer.llm.detokenize(ids, special=special) == expected


def test_pieces_identical(pair):
    ours, peer = pair
    for token in range(ours.n_vocab):
        for special in (False, True):
            assert ours.token_to_piece(token, special=special) == peer.piece(token, special), token


def test_special_ids_identical(pair):
    ours, peer = pair
    m = ours.model
    assert ours.n_vocab == llama_cpp.llama_vocab_n_tokens(peer.vocab)
    assert m.bos == peer.llm.token_bos()
    assert m.eos == peer.llm.token_eos()
    assert m.add_bos == llama_cpp.llama_vocab_get_add_bos(peer.vocab)
    eog_ours = [t for t in range(ours.n_vocab) if m.is_eog(t)]
    eog_peer = [t for t in range(ours.n_vocab) if llama_cpp.llama_vocab_is_eog(peer.vocab, t)]
    assert eog_ours == eog_peer


def test_random_text_identical(pair):
    ours, peer = pair
    rng = random.Random(1234)
    for _ in range(1000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))).encode()
        add_bos, special = rng.random() < 0.5, rng.random() < 0.5
        assert ours.tokenize(text, add_bos=add_bos, special=special) == peer.tokenize(text, add_bos, special), text


@pytest.mark.slow
def test_wikitext_identical(pair, wikitext_test):
    ours, peer = pair
    data = wikitext_test.encode("utf-8")
    ids = ours.tokenize(data, add_bos=False)
    assert ids == peer.tokenize(data, False, False)
    assert ours.detokenize(ids) == peer.detokenize(ids, False)


def test_unknown_pre_tokenizer_rejected(model_path, tmp_path):
    """An unknown tokenizer.ggml.pre is an error for both (llama.cpp names it "gpt-2")."""
    path = write_bpe_variant(tmp_path / "gpt2.gguf", model_path, "no-such-pre")
    with pytest.raises(Exception, match="pre"):
        LLM(str(path), vocab_only=True)
    with pytest.raises(Exception):
        Peer(path)
