"""lowbit against llama.cpp on the default model: greedy tokens, logits, perplexity."""
import numpy as np
import pytest

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "In 1905, Albert Einstein published",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
]


def peer_greedy(peer, tokens, n):
    peer.reset()
    out = []
    for tok in peer.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if tok == peer.token_eos() or len(out) == n:
            break
        out.append(tok)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_identical(llm, peer, prompt):
    tokens = llm.tokenize(prompt, special=True)
    assert tokens == peer.tokenize(prompt.encode(), add_bos=True, special=True)
    ours = llm.generate_tokens(tokens, max_tokens=64, temperature=0)
    theirs = peer_greedy(peer, tokens, 64)
    assert ours == theirs, f"first difference at {next(i for i, (a, b) in enumerate(zip(ours + [-1], theirs + [-1])) if a != b)}"


def test_logits_match(llm, peer, wikitext_test):
    tokens = llm.tokenize(wikitext_test[5000:])[:256]
    ours = np.array(llm.logits(tokens))
    peer.reset()
    peer.eval(tokens)
    theirs = np.array(peer.scores[: len(tokens)])
    top1 = np.mean(ours.argmax(1) == theirs.argmax(1))
    delta = np.abs(ours - theirs).max()
    span = theirs.max() - theirs.min()
    print(f"top-1 agreement {top1:.4f}, max |delta| {delta:.4f}, logit range {span:.2f}, ratio {delta / span:.5f}")
    assert top1 >= 0.99
    assert delta / span < 0.01   # measured about 0.001; see docs/conformance.md


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


@pytest.mark.slow
def test_perplexity_within_half_percent(llm, peer, wikitext_test):
    n_ctx, n_chunks = 512, 20
    ours = llm.perplexity(wikitext_test, n_ctx=n_ctx, chunks=n_chunks)
    tokens = peer.tokenize(wikitext_test.encode(), add_bos=True)
    theirs = peer_perplexity(peer, tokens, n_ctx, n_chunks)
    print(f"perplexity lowbit {ours.ppl:.4f} llama.cpp {theirs:.4f} ratio {ours.ppl / theirs:.5f}")
    assert abs(ours.ppl / theirs - 1) < 0.005
