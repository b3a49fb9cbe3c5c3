"""The Python API: lowbit.LLM, in the spirit of llama-cpp-python's Llama."""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from . import _core
from .chat_template import CHATML_TEMPLATE, ChatTemplate
from .models import default_gpu_layers, resolve_model_path

Prompt = Union[str, bytes, Sequence[int]]


@dataclass
class PerplexityResult:
    ppl: float
    stderr: float           # of the perplexity, as llama-perplexity prints it
    n_chunks: int
    n_tokens_scored: int

    def __str__(self) -> str:
        return f"Final estimate: PPL = {self.ppl:.4f} +/- {self.stderr:.5f}"


class _StopScanner:
    """Finds stop strings in streamed text, holding back only what could start one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.pending[: min(hits)]
            self.pending = ""
            return out, True
        keep = 0
        for s in self.stops:   # longest suffix of pending that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class LLM:
    """A GGUF model with one context.

    >>> llm = LLM()                      # the default model, SmolLM2-135M-Instruct
    >>> llm.generate("The capital of France is", max_tokens=8, temperature=0)
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int | None = None,
        vocab_only: bool = False,
        n_gpu_layers: int | None = None,
    ):
        path = resolve_model_path(model_path)
        if n_ctx < 0:
            raise ValueError("n_ctx must be >= 0 (0 means the model's training context)")
        if n_threads is not None and n_threads <= 0:
            raise ValueError("n_threads must be positive")
        if n_batch <= 0:
            raise ValueError("n_batch must be positive")
        self.model_path = path
        self.model = _core.Model(path, vocab_only=vocab_only)
        self.vocab_only = vocab_only
        self._ctx = None
        self._ctx_tokens: list[int] = []     # what the context's KV cache holds
        self._n_ctx = n_ctx
        self._n_threads = n_threads or 0
        self._n_batch = n_batch
        # None: everything on the GPU when this build has one, a device is present and it
        # runs this model's weight types
        if n_gpu_layers is None:
            n_gpu_layers = default_gpu_layers(self.model) if not vocab_only else 0
        self._n_gpu_layers = n_gpu_layers
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self._template: ChatTemplate | None = None

    # ------------------------------------------------------------------ properties
    @property
    def context(self):
        if self.vocab_only:
            raise RuntimeError("this LLM was opened with vocab_only=True and cannot evaluate tokens")
        if self._ctx is None:
            self._ctx = _core.Context(self.model, n_ctx=self._n_ctx, n_threads=self._n_threads, n_batch=self._n_batch,
                                      n_gpu_layers=self._n_gpu_layers)
        return self._ctx

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab

    @property
    def metadata(self) -> dict:
        return self.model.hparams

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of text.  add_bos adds the model's BOS/EOS as its vocabulary says;
        special=True parses control tokens such as <|im_start|> written in the text."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        if not isinstance(text, (bytes, bytearray)):
            raise TypeError("text must be str or bytes")
        return self.model.tokenize(bytes(text), add_bos, special)

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> bytes:
        return self.model.detokenize(list(tokens), special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        return self.model.token_to_piece(token, special)

    def _prompt_tokens(self, prompt: Prompt, add_bos: bool = True, special: bool = False) -> list[int]:
        if isinstance(prompt, (str, bytes)):
            tokens = self.tokenize(prompt, add_bos=add_bos, special=special)
        else:
            tokens = [int(t) for t in prompt]
        if not tokens:
            raise ValueError("the prompt is empty (no tokens)")
        return tokens

    # ------------------------------------------------------------------ evaluation
    def _eval_prompt(self, tokens: list[int], all_logits: bool = False) -> None:
        """Evaluates tokens, reusing the longest prefix the KV cache already holds."""
        ctx = self.context
        if len(tokens) > ctx.n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens is longer than the context ({ctx.n_ctx} tokens)")
        keep = 0
        if not all_logits:
            limit = min(len(self._ctx_tokens), len(tokens) - 1)   # always evaluate at least one token
            while keep < limit and self._ctx_tokens[keep] == tokens[keep]:
                keep += 1
        ctx.rewind(keep)
        self._ctx_tokens = self._ctx_tokens[:keep]
        ctx.eval(tokens[keep:], all_logits)
        self._ctx_tokens.extend(tokens[keep:])

    def _eval_token(self, token: int) -> None:
        self.context.eval([token], False)
        self._ctx_tokens.append(token)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of every position, shape (len(tokens), n_vocab), float32.

        The array is a read-only view of the context's buffer (no copy), valid until
        the next evaluation; copy it to keep it.
        """
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("no tokens given")
        self.context.rewind(0)
        self._ctx_tokens = []
        self._eval_prompt(tokens, all_logits=True)
        return self.context.logits()

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompt: Prompt,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: bool = False,
        special: bool = False,
        ignore_eos: bool = False,
    ) -> Union[str, Iterator[str]]:
        """Continues prompt.  Returns the text, or with stream=True an iterator of text
        pieces (never half a UTF-8 character).  Stops at EOS/end-of-turn tokens (unless
        ignore_eos), at any stop string (which is not included), or after max_tokens."""
        tokens = self._prompt_tokens(prompt, special=special)
        pieces = self._generate_pieces(tokens, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty,
                                       seed, stop, ignore_eos)
        return pieces if stream else "".join(pieces)

    def generate_tokens(self, prompt: Prompt, max_tokens: int = 128, **sampling: Any) -> list[int]:
        """Like generate(), but returns the generated token ids (EOS excluded)."""
        out: list[int] = []
        for tok in self._token_stream(self._prompt_tokens(prompt), max_tokens, **sampling):
            out.append(tok)
        return out

    def _make_sampler(self, temperature, top_k, top_p, min_p, repeat_penalty, seed) -> Any:
        if max(top_p, min_p) < 0 or repeat_penalty <= 0 or math.isnan(temperature):
            raise ValueError("invalid sampling parameters")
        return _core.Sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                             repeat_penalty=repeat_penalty, seed=self.seed if seed is None else seed)

    def _token_stream(self, tokens: list[int], max_tokens: int, temperature: float = 0.8, top_k: int = 40,
                      top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                      seed: int | None = None, ignore_eos: bool = False) -> Iterator[int]:
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        sampler = self._make_sampler(temperature, top_k, top_p, min_p, repeat_penalty, seed)
        self._eval_prompt(tokens)
        history = list(tokens)
        for _ in range(max_tokens):
            tok = sampler.sample(self.context, history)
            if self.model.is_eog(tok) and not ignore_eos:
                return
            yield tok
            history.append(tok)
            if len(self._ctx_tokens) >= self.context.n_ctx:
                return   # context full: stop rather than fail
            self._eval_token(tok)

    def _generate_pieces(self, tokens, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed,
                         stop, ignore_eos=False) -> Iterator[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        scanner = _StopScanner(stops)
        decoder = _core.StreamDecoder(self.model)
        for tok in self._token_stream(tokens, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed,
                                      ignore_eos):
            text, hit = scanner.feed(decoder.push(tok).decode("utf-8"))
            if text:
                yield text
            if hit:
                return
        text, hit = scanner.feed(decoder.flush().decode("utf-8"))
        tail = text if hit else text + scanner.flush()
        if tail:
            yield tail

    # ------------------------------------------------------------------ chat
    @property
    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            source = self.model.chat_template.decode("utf-8", errors="replace") or CHATML_TEMPLATE
            piece = lambda t: self.model.token_to_piece(t, True).decode("utf-8", "replace") if t >= 0 else ""  # noqa: E731
            self._template = ChatTemplate(source, bos_token=piece(self.model.bos), eos_token=piece(self.model.eos))
        return self._template

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def chat(self, messages: Sequence[Mapping[str, Any]], max_tokens: int = 512, temperature: float = 0.8,
             top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
             seed: int | None = None, stop: str | Sequence[str] | None = None,
             stream: bool = False, ignore_eos: bool = False) -> Union[str, Iterator[str]]:
        """The assistant's reply to messages ([{"role": ..., "content": ...}, ...])."""
        prompt = self.apply_chat_template(messages)
        add_bos = self.model.add_bos and not prompt.startswith(self.chat_template.bos_token or "\0")
        tokens = self.tokenize(prompt, add_bos=add_bos, special=True)
        pieces = self._generate_pieces(tokens, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed,
                                       stop, ignore_eos)
        return pieces if stream else "".join(pieces)

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> dict:
        """An OpenAI-shaped chat completion (non-streaming)."""
        text = self.chat(messages, **kwargs)
        return {
            "object": "chat.completion",
            "model": os.path.basename(self.model_path),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }

    # ------------------------------------------------------------------ perplexity
    def perplexity(self, text: str, n_ctx: int = 512, chunks: int | None = None) -> PerplexityResult:
        """Perplexity as llama.cpp's llama-perplexity computes it: the text is cut into
        chunks of n_ctx tokens, each evaluated from an empty cache (BOS first where the
        model adds one), and only the second half of each chunk is scored."""
        if n_ctx < 8:
            raise ValueError("n_ctx must be at least 8")
        if n_ctx > self.context.n_ctx:
            raise ValueError(f"n_ctx {n_ctx} exceeds the context size {self.context.n_ctx}")
        tokens = self.tokenize(text, add_bos=True)
        n_chunks = len(tokens) // n_ctx
        if chunks is not None and chunks > 0:
            n_chunks = min(n_chunks, chunks)
        if n_chunks == 0:
            raise ValueError(f"text has {len(tokens)} tokens; at least {n_ctx} are needed for one chunk")
        add_bos = self.model.add_bos
        first = n_ctx // 2
        nll = nll2 = 0.0
        count = 0
        for i in range(n_chunks):
            chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
            inputs = list(chunk)
            if add_bos:
                inputs[0] = self.model.bos
            logits = self.logits(inputs)
            rows = logits[first:n_ctx - 1].astype(np.float64)
            targets = np.asarray(chunk[first + 1:n_ctx])
            mx = rows.max(axis=1)
            logz = mx + np.log(np.exp(rows - mx[:, None]).sum(axis=1))
            losses = logz - rows[np.arange(len(targets)), targets]
            nll += float(losses.sum())
            nll2 += float((losses * losses).sum())
            count += len(targets)
        mean = nll / count
        var = nll2 / count - mean * mean
        stderr = math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
        ppl = math.exp(mean)
        return PerplexityResult(ppl=ppl, stderr=ppl * stderr, n_chunks=n_chunks, n_tokens_scored=count)
