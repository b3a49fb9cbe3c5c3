"""Writes the initial seed inputs of the fuzz corpora (run once; the corpus is committed)."""
import os

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_gguf(path, model="gpt2", n_tokens=40, with_tensor=True):
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_tokenizer_model(model)
    tokens = [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(n_tokens)]
    tokens[0], tokens[1] = "<s>", "</s>"
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * (n_tokens - 2))
    if model == "llama":
        w.add_token_scores([0.0] * n_tokens)
    else:
        w.add_token_merges(["a a", "b b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_array("test.nested", [[1, 2], [3]])
    if with_tensor:
        w.add_tensor("token_embd.weight", np.ones((n_tokens, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    g = os.path.join(HERE, "corpus", "fuzz_gguf")
    tiny_gguf(os.path.join(g, "bpe.gguf"))
    tiny_gguf(os.path.join(g, "spm.gguf"), model="llama")
    tiny_gguf(os.path.join(g, "no_tensor.gguf"), with_tensor=False)
    t = os.path.join(HERE, "corpus", "fuzz_tokenizer")
    samples = {
        "prose.txt": "The quick brown fox jumps over the lazy dog. It's 3:45pm, isn't it?",
        "unicode.txt": "Café naïve 東京 대한민국 😀👍🏽 ﬁ",
        "code.txt": "def f(x):\n\treturn  x**2   # tabs\n\n\n",
        "special.txt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<|endoftext|>",
        "digits.txt": "1234567890 3.14159 1,000,000",
    }
    for name, text in samples.items():
        with open(os.path.join(t, name), "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(t, "invalid_utf8.bin"), "wb") as f:
        f.write(b"ok \xff\xfe \xc3 \xe2\x82 \xf0\x9f\x98 end")


if __name__ == "__main__":
    main()
