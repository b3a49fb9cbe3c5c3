"""lowbit against llama.cpp on the default model: greedy tokens, logits, perplexity."""
import numpy as np
import pytest

PROMPTS = [
    "The capital of France is",
    "In 1905, Albert Einstein published",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "The history of the Roman Empire",
    "import numpy as np\n",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Photosynthesis is the process by which",
    "The largest planet in our solar system is",
    "To make a cup of tea, first",
    "#include <stdio.h>\n\nint main(void) {\n",
    "Q: What is the boiling point of water?\nA:",
    "The French Revolution began in",
    "Machine learning is a field of",
    "The human heart has four chambers:",
    "Shakespeare wrote many plays, including",
    "The speed of light in a vacuum is",
    "for i in range(10):\n",
    "Mount Everest is located in",
    "The Great Wall of China was built",
    "SELECT name, age FROM users WHERE",
    "The mitochondria is the powerhouse of",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
]
N_GREEDY = 64
# Both runtimes quantize activations to 8 bits before every product, so a last-bit
# difference in summation order can flip a rounding and move a logit by ~0.5 (llama.cpp
# differs from itself that much between batched and one-token evaluation).  Where the
# top two logits are closer than this (llama.cpp differs from itself by up to ~1.07 on
# this model between batched and one-token evaluation), either choice is right.
NEAR_TIE = 1.0


def peer_greedy(peer, tokens, n, is_eog):
    out = []
    for tok in peer.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if is_eog(tok):
            break
        out.append(tok)
        if len(out) == n:
            break
    return out


def peer_margin(peer, tokens, a, b):
    """llama.cpp's logit gap between tokens a and b after `tokens`."""
    peer.reset()
    peer.eval(tokens)
    row = peer.scores[len(tokens) - 1]
    return abs(float(row[a]) - float(row[b]))


def test_greedy_tokens_identical(llm, peer):
    """Greedy continuations (64 tokens) are identical to llama.cpp's for at least three
    prompts, and every divergence on the others starts at a near-tie of llama.cpp's own."""
    identical = 0
    report = []
    for prompt in PROMPTS:
        tokens = llm.tokenize(prompt, special=True)
        assert tokens == peer.tokenize(prompt.encode(), add_bos=True, special=True)
        ours = llm.generate_tokens(tokens, max_tokens=N_GREEDY, temperature=0)
        theirs = peer_greedy(peer, tokens, N_GREEDY, llm.model.is_eog)
        if ours == theirs:
            identical += 1
            report.append(f"{prompt!r}: identical ({len(ours)} tokens)")
            continue
        i = next(i for i, (a, b) in enumerate(zip(ours + [-1], theirs + [-1])) if a != b)
        assert i < min(len(ours), len(theirs)), f"{prompt!r}: one runtime stopped early at {i}"
        gap = peer_margin(peer, tokens + theirs[:i], ours[i], theirs[i])
        report.append(f"{prompt!r}: diverges at token {i}, llama.cpp's gap {gap:.3f}")
        assert gap < NEAR_TIE, f"{prompt!r}: divergence at {i} is not a near-tie (gap {gap:.3f})"
    print("\n".join(report))
    assert identical >= 3, "\n".join(report)


def test_logits_match(llm, peer, model_path, wikitext_test):
    """Logits of a 256-token WikiText chunk against llama.cpp, and both against a float64
    reference.  Both runtimes quantize activations to 8 bits, which moves logits by up to
    ~1.5 and flips near-ties: llama.cpp agrees with itself (flash attention on vs off,
    batch vs one token at a time) on only 96-97% of top-1 choices on this chunk, so
    agreement is bounded by that, not by 99% (measurements in docs/conformance.md)."""
    from .reference_llama import forward, load_weights

    tokens = llm.tokenize(wikitext_test[5000:])[:256]
    ours = np.array(llm.logits(tokens))
    peer.reset()
    peer.eval(tokens)
    theirs = np.array(peer.scores[: len(tokens)])
    ref = forward(*load_weights(model_path), tokens)
    top1 = np.mean(ours.argmax(1) == theirs.argmax(1))
    span = theirs.max() - theirs.min()
    delta = np.abs(ours - theirs).max()
    err_ours, err_peer = np.abs(ours - ref).mean(), np.abs(theirs - ref).mean()
    print(f"top-1 agreement {top1:.4f}, max |delta| {delta:.4f} of range {span:.2f} ({delta / span:.4f}); "
          f"mean |error| vs float64: lowbit {err_ours:.4f}, llama.cpp {err_peer:.4f}")
    assert top1 >= 0.93
    assert delta / span < 0.035
    assert err_ours < 1.25 * err_peer, "lowbit strays further from exact arithmetic than llama.cpp"
    assert np.mean(ours.argmax(1) == ref.argmax(1)) >= 0.92


def peer_perplexity(peer, tokens, n_ctx, n_chunks):
    """llama-perplexity's algorithm on llama.cpp's logits."""
    first = n_ctx // 2
    nll = []
    for i in range(n_chunks):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        peer.reset()
        peer.eval(chunk)
        rows = np.array(peer.scores[first:n_ctx - 1], dtype=np.float64)
        tgt = np.array(chunk[first + 1:n_ctx])
        mx = rows.max(1)
        logz = mx + np.log(np.exp(rows - mx[:, None]).sum(1))
        nll.extend(logz - rows[np.arange(len(tgt)), tgt])
    return float(np.exp(np.mean(nll)))


def test_perplexity_within_half_percent(llm, peer, wikitext_test):
    n_ctx, n_chunks = 512, 20
    ours = llm.perplexity(wikitext_test, n_ctx=n_ctx, chunks=n_chunks)
    tokens = peer.tokenize(wikitext_test.encode(), add_bos=True)
    theirs = peer_perplexity(peer, tokens, n_ctx, n_chunks)
    print(f"perplexity lowbit {ours.ppl:.4f} llama.cpp {theirs:.4f} ratio {ours.ppl / theirs:.5f}")
    assert abs(ours.ppl / theirs - 1) < 0.005
