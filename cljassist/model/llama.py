"""The local GGUF model: a thin, deterministic wrapper over ``llama_cpp.Llama``.

``llama_cpp`` is imported lazily, inside :class:`LocalModel`, so that importing
this module (and the pure-Python parts of the package) stays fast.

Decoding is deterministic: the prompt is evaluated once, the ``n`` most
probable distinct first tokens start ``n`` branches, and each branch continues
greedily.  With token healing (``cljassist/model/healing.py``) the prompt is first
backed off to a clean token boundary, and the first tokens are held to the
backed-off text until it is reproduced.  Between branches the context is rewound
to the end of the prompt, so the prompt's KV cache is computed once per call.  Across calls, the longest
common token prefix with what is already in the KV cache is kept, and the prompts evaluated before
(other buffers') are kept aside as copies of their KV cache (cljassist/model/kv_states.py): a prompt
is evaluated from the kept one that shares the longest token prefix with it.

Speculative decoding (cljassist/model/speculate.py): each pass of a branch also evaluates tokens
guessed to follow (by prompt lookup or a draft model), with the logits after every one of them; as
long as a guess is the token the branch picks anyway, the next step's logits are already there, so
one pass can give several tokens.  The branch's own loop picks every token as without guesses, so
its tokens and text are those of plain greedy decoding; the log-probabilities of tokens decided in
a pass of several tokens are that pass's (llama.cpp's logits differ slightly with the batch's
shape), not recomputed one token at a time, which would cost the pass that speculation saves.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cljassist.budgets import CANCEL_CHUNK, CONTEXT_WINDOW, KV_RESTORE_GAIN, KV_STATES, KV_STATES_MEMORY, SPECULATION_TIE
from cljassist.calibration import Calibration
from cljassist.errors import Cancelled, ModelLoadError, ModelNotFound
from cljassist.model.fim import FimFormat, detect_fim_format
from cljassist.model.gguf_info import GgufMetadata, read_gguf_metadata
from cljassist.model.healing import MOST_TOKENS_BACKED_OFF, NEXT_CODE, VocabularyIndex, start_kept, tokens_to_back_off
from cljassist.model.kv_states import KvState, KvStates, common_prefix, continues
from cljassist.model.speculate import DraftModel, Proposer, Speculation
from cljassist.threads import default_threads
from cljassist.types import Generation, Prompt, as_prompt, generation_counts

# prompt tokens evaluated between two looks at a request's cancel flag
_CANCEL_CHUNK = CANCEL_CHUNK.value

# a pass over several tokens gives logits a little off those of one token at a time (the gap between
# the best tokens moved by up to 0.72 nats over 40 tokens evaluated in passes of 2 to 9, SmolLM2;
# 0.46 the Qwen2.5-Coder-0.5B, measured here); a step whose two best tokens are closer than this is
# decided on the logits of plain decoding, so that speculation picks what greedy decoding picks
_TIE_MARGIN = SPECULATION_TIE.value

# tokenizer.ggml.token_type value of control tokens (BOS, EOS, FIM markers, ...)
_TOKEN_TYPE_CONTROL = 3


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax of a 1-D array, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x)
    if not np.isfinite(m):
        m = 0.0
    shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted)))


def _choices(lp: np.ndarray, allowed: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray]:
    """What one step of a candidate chooses among: every token, ``(None, lp)``; or, with ``allowed``
    ids given, those ids and their log-probabilities renormalized over them (given that the text
    must go on as they do)."""
    if allowed is None:
        return None, lp
    return allowed, log_softmax(lp[allowed])


def _pick(lp: np.ndarray, allowed: np.ndarray | None) -> tuple[int, float]:
    """The most probable token of a step (:func:`_choices`) and its log-probability."""
    ids, lps = _choices(lp, allowed)
    best = int(np.argmax(lps))
    return (best if ids is None else int(ids[best])), float(lps[best])


def _logprob_of(tok: int, lp: np.ndarray, allowed: np.ndarray | None) -> float | None:
    """``tok``'s log-probability at a step (:func:`_choices`); None where the step may not take it."""
    ids, lps = _choices(lp, allowed)
    if ids is None:
        return float(lps[tok])
    at = np.flatnonzero(ids == tok)
    return float(lps[at[0]]) if at.size else None


def _retypes(healed: bytes, generated: bytes) -> bool:
    """Whether the token that made ``generated`` only re-typed the backed-off text ``healed``: such a
    token is not counted in a candidate's ``n_tokens``."""
    return bool(healed) and len(generated) <= len(healed)


def utf8_complete_len(b: bytes) -> int:
    """Length of the longest prefix of ``b`` that does not end inside a UTF-8 sequence."""
    n = len(b)
    # Look back at most 3 bytes for the lead byte of a trailing sequence.
    for back in range(1, min(4, n) + 1):
        c = b[n - back]
        if c & 0xC0 == 0x80:  # continuation byte: keep looking for the lead
            continue
        if c & 0x80 == 0:  # ASCII
            return n
        need = 2 if c & 0xE0 == 0xC0 else 3 if c & 0xF0 == 0xE0 else 4 if c & 0xF8 == 0xF0 else 1
        return n if back >= need else n - back
    return n


@contextlib.contextmanager
def _stderr_to(path: str | None) -> Iterator[None]:
    """Send file descriptor 2 (where llama.cpp/ggml write) to ``path`` (or /dev/null) meanwhile."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = 2
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    target = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(target, fd)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(target)


class LocalModel:
    """A GGUF model loaded with llama.cpp, generating deterministic FIM candidates.

    ``last_stats`` after :meth:`generate_candidates`::

        prompt_tokens    tokens of the (possibly truncated) prompt
        reused_tokens    prompt tokens whose KV cache was kept, from the previous call or aside
        reused_from      where from: "context" (as the previous call left it), "kept N" (the
                         prompt kept aside as number N, restored), or "" (nothing reused)
        kept_prompts     evaluated prompts kept aside after this call, and kept_mib their memory
        kv_copy_ms       time to copy the evaluated context aside and a kept one back (0 when none)
        prompt_ms        time to evaluate the rest of the prompt (copies included)
        gen_ms           time of all branches
        truncated_tokens prompt tokens dropped (0 when none)
        truncation       how they were dropped (only when some were)
        speculation      with speculative decoding on: proposed and accepted guessed tokens,
                         acceptance (accepted / proposed), passes (model evaluations of the
                         branches), tokens (decided from them), tokens_per_pass (tokens /
                         passes; 1.0 without guesses, less where near-ties were decided again)
                         and propose_ms (of gen_ms, the time spent guessing)
    """

    def __init__(
        self,
        path: Path,
        n_ctx: int = CONTEXT_WINDOW.value,
        n_threads: int | None = None,
        n_batch: int = 512,
        token_healing: bool = True,
        calibration: Calibration | None = None,
        speculate: bool = False,
        draft: LocalModel | None = None,
        kept_prompts: int = KV_STATES.value,
        kept_bytes: int = KV_STATES_MEMORY.value,
    ) -> None:
        """``calibration``: the named model's score table, when this file is a named model.
        ``speculate``: guess tokens ahead and check them in one pass (prompt lookup, and ``draft``,
        a smaller model of the same tokenizer, where lookup finds nothing); off: plain greedy.
        The draft is then this model's: preloaded with it, cancelled with its request, closed with it.
        ``kept_prompts``, ``kept_bytes``: how many evaluated prompts are kept aside, in how much memory."""
        self.path = Path(path)
        self.calibration = calibration
        self.token_healing = token_healing
        if not self.path.is_file():
            raise ModelNotFound(f"model file not found: {self.path}")
        self.meta: GgufMetadata = read_gguf_metadata(self.path)
        self.name: str = self.meta.name
        self.fim: FimFormat = detect_fim_format(self.meta)
        self.last_stats: dict[str, Any] = {}
        if speculate and draft is not None and draft.meta.tokens != self.meta.tokens:
            raise ModelLoadError(f"draft model {draft.name} has another tokenizer than {self.name}")

        try:
            import llama_cpp  # noqa: PLC0415 - lazy on purpose
        except ImportError as e:
            raise ModelLoadError(
                "llama-cpp-python is not installed: pip install llama-cpp-python"
            ) from e
        self._lc = llama_cpp

        threads = n_threads or default_threads()
        train_ctx = int(self.meta.get(f"{self.meta.architecture}.context_length", 0) or 0)
        if train_ctx > 0:
            n_ctx = min(n_ctx, train_ctx)
        fd, log_path = tempfile.mkstemp(prefix="cljassist-llama-", suffix=".log")
        os.close(fd)
        try:
            with _stderr_to(log_path):
                self._llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    logits_all=False,
                    # a full-size sliding-window cache can be cut back to any
                    # position, which the per-branch rewind needs (Gemma 3 etc.)
                    swa_full=True,
                    verbose=False,
                )
        except Exception as e:  # llama_cpp raises ValueError/RuntimeError with little detail
            detail = ""
            with contextlib.suppress(OSError):
                lines = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines()]
                lines = [ln for ln in lines if ln]
                if lines:
                    detail = f" ({lines[-1][:200]})"
            raise ModelLoadError(f"cannot load model {self.path}: {e}{detail}") from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(log_path)

        llm = self._llm
        self.n_ctx: int = int(llm.n_ctx())
        self.n_threads = threads
        self._n_vocab = int(llm.n_vocab())
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._mem = llama_cpp.llama_get_memory(llm.ctx)
        self._piece_cache: dict[int, bytes] = {}
        self._stop_ids = self._collect_stop_ids()
        self._head_ids = self._collect_head_ids()
        self._vocabulary_index: VocabularyIndex | None = None
        self._ending_cache: dict[Callable[[str], bool], np.ndarray] = {}
        # the last prompt evaluated and the next-token logits after it, while its KV cache is kept
        self._prompt_end: tuple[list[int], np.ndarray] | None = None
        # the prompts evaluated before, kept aside; and the number the next one kept gets
        self._kept = KvStates(kept_prompts, kept_bytes)
        self._kept_numbers = itertools.count(1)
        self._reuse: dict[str, Any] = {}  # where the last _load_prompt reused from, for last_stats
        self._proposer: Proposer | None = None
        self._draft: LocalModel | None = draft if speculate else None
        if speculate:
            self._proposer = Speculation(DraftModel(draft) if draft is not None else None)
        self._batch: Any = None  # llama_batch for passes over guessed tokens, made on first need
        self._batch_size = 0
        if token_healing:
            # every healed request needs the index (0.2 s for SmolLM2's 49k tokens, 0.7 s for Qwen's
            # 152k, measured here): built with the model, not on the first keystroke
            self._vocabulary_index = self._index_vocabulary()

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: str, special: bool = True, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``.  ``special``: parse special-token texts such as
        ``<|fim_prefix|>`` into their ids.  ``add_bos``: add BOS if the model's
        tokenizer asks for it (tokenizer.ggml.add_bos_token)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (special-token texts count as one token; no BOS)."""
        return len(self.tokenize(text, special=True, add_bos=False))

    def _piece(self, tok: int) -> bytes:
        b = self._piece_cache.get(tok)
        if b is None:
            lc = self._lc
            size = 64
            while True:
                buf = (ctypes.c_char * size)()
                n = lc.llama_token_to_piece(self._vocab, int(tok), buf, size, 0, False)
                if n < 0:
                    size = -n + 1
                    continue
                b = bytes(buf[:n])
                break
            self._piece_cache[tok] = b
        return b

    def _detok_bytes(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._piece(t) for t in ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (control tokens render as nothing; invalid UTF-8 as U+FFFD)."""
        return self._detok_bytes(ids).decode("utf-8", errors="replace")

    def _collect_stop_ids(self) -> frozenset[int]:
        """Ids that end a candidate: EOG per llama.cpp, EOS/EOT, the FIM stop texts, control tokens."""
        ids: set[int] = set()
        index = {t: i for i, t in enumerate(self.meta.tokens)} if self.meta.tokens else {}
        for text in (*self.fim.stop, *self.fim.tokens.values()):
            if text in index:
                ids.add(index[text])
        for key in ("eos", "eot", "eom", "fim_pad", "fim_rep", "fim_sep"):
            tid = self.meta.special_token_ids().get(key)
            if tid is not None and 0 <= tid < self._n_vocab:
                ids.add(tid)
        types = self.meta.get("tokenizer.ggml.token_type")
        if types is not None and len(types) == len(self.meta.tokens):
            ids.update(int(i) for i in np.nonzero(np.asarray(types) == _TOKEN_TYPE_CONTROL)[0])
        return frozenset(i for i in ids if 0 <= i < self._n_vocab)

    def _is_stop(self, tok: int) -> bool:
        return tok in self._stop_ids or bool(self._lc.llama_vocab_is_eog(self._vocab, tok))

    # ------------------------------------------------------------------ token healing

    @property
    def _vocabulary(self) -> VocabularyIndex:
        """Every token's text, indexed (at load when token healing is on, else on first need)."""
        if self._vocabulary_index is None:
            self._vocabulary_index = self._index_vocabulary()
        return self._vocabulary_index

    def _index_vocabulary(self) -> VocabularyIndex:
        stops = [t for t in range(self._n_vocab) if self._is_stop(t)]
        return VocabularyIndex([self._piece(t) for t in range(self._n_vocab)], stops)

    def heal(self, prompt: Prompt) -> Prompt:
        """``prompt`` backed off to its last clean token boundary (see cljassist/model/healing.py):
        ``before`` and ``text`` without the backed-off text, which goes to ``healed``.

        Only a prompt whose text is this model's rendering of its parts can be re-rendered without
        the backed-off text; any other (a finished text, a prompt healed already, healing off)
        comes back with ``healed`` set to what it already says, or "" (read as it is)."""
        if prompt.healed is not None:
            return prompt
        as_given = dataclasses.replace(prompt, healed="")
        if not self.token_healing or not prompt.before or prompt.text != self.fim.render(prompt.before, prompt.suffix, prompt.preamble):
            return as_given
        ids = self.tokenize(prompt.before, special=True, add_bos=False)
        # the first token always stays: a prompt of nothing but the backed-off text would be empty
        pieces = [self._piece(t) for t in ids[max(1, len(ids) - MOST_TOKENS_BACKED_OFF):]]
        k = tokens_to_back_off(pieces, self._vocabulary.can_grow)
        backed = b"".join(pieces[len(pieces) - k:]) if k else b""
        if backed.isspace():  # after whitespace code begins; within a symbol the symbol goes on
            going_on = self.tokenize(backed.decode("utf-8", errors="ignore") + NEXT_CODE, special=False)
            backed = backed[start_kept(backed, [self._piece(t) for t in going_on]):]
        try:
            healed = backed.decode("utf-8")
        except UnicodeDecodeError:  # the tokens split a character: no text boundary there
            return as_given
        if not healed or not prompt.before.endswith(healed):
            return as_given
        before = prompt.before[: len(prompt.before) - len(healed)]
        prefix = prompt.prefix
        if prompt.before.endswith(prefix) and len(prefix) >= len(healed):
            prefix = prefix[: len(prefix) - len(healed)]
        text = self.fim.render(before, prompt.suffix, prompt.preamble)
        return dataclasses.replace(prompt, text=text, prefix=prefix, before=before, tokens=self.count_tokens(text),
                                   healed=healed)

    # ------------------------------------------------------------------ KV cache

    def _rewind(self, n: int) -> None:
        """Keep only the first ``n`` evaluated tokens (KV cache included)."""
        llm = self._llm
        if n >= llm.n_tokens:
            return
        if self._prompt_end is not None and n < len(self._prompt_end[0]):
            self._prompt_end = None
        ok = True
        if self._mem is not None:
            ok = bool(self._lc.llama_memory_seq_rm(self._mem, -1, n, -1))
        if ok:
            llm.n_tokens = n
        else:  # e.g. a sliding-window cache that cannot drop a tail: start over
            if self._mem is not None:
                self._lc.llama_memory_seq_rm(self._mem, -1, 0, -1)
            llm.n_tokens = 0

    def _back_to_prompt(self, prompt_len: int) -> None:
        """Keep the evaluated prompt, the first ``prompt_len`` tokens, and drop what followed."""
        self._rewind(prompt_len)
        if self._llm.n_tokens < prompt_len:  # the cache could not be cut back: re-evaluate
            prompt = [int(t) for t in self._llm.input_ids[:prompt_len]]
            self._llm.eval(prompt[self._llm.n_tokens :])

    def _eval(self, tokens: Sequence[int], cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        """Evaluate ``tokens`` after the current position; the next-token logits (a copy).

        With ``cancelled``, long inputs go in chunks and the flag is checked between them,
        so a superseded request stops within one chunk (~0.3-0.7 s here) instead of at the end.
        """
        tokens = list(tokens)
        if cancelled is None:
            self._llm.eval(tokens)
        else:
            for start in range(0, len(tokens), _CANCEL_CHUNK):
                if cancelled():
                    raise Cancelled("cancelled during prompt evaluation")
                self._llm.eval(tokens[start : start + _CANCEL_CHUNK])
        ptr = self._lc.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _eval_each(self, tokens: Sequence[int]) -> list[np.ndarray]:
        """Evaluate ``tokens`` after the current position in one pass; the next-token logits after
        each of them (copies)."""
        lc, llm, n = self._lc, self._llm, len(tokens)
        if self._batch is None or self._batch_size < n:
            if self._batch is not None:
                lc.llama_batch_free(self._batch)
            self._batch, self._batch_size = lc.llama_batch_init(n, 0, 1), n
        batch, past = self._batch, int(llm.n_tokens)
        batch.n_tokens = n
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(tok), past + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, True
        if self._mem is not None:
            lc.llama_memory_seq_rm(self._mem, -1, past, -1)
        if lc.llama_decode(llm.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on a pass over guessed tokens")
        llm.input_ids[past: past + n] = tokens
        llm.n_tokens = past + n
        return [np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, i), shape=(self._n_vocab,)).copy()
                for i in range(n)]

    def guess_after(self, history: Sequence[int], most: int, cancelled: Callable[[], bool] | None = None) -> list[int]:
        """Up to ``most`` tokens this model picks greedily after ``history`` (ending before a stop
        token): a draft model's guesses.  What it evaluated stays, so the next guess, after a history
        that shares most of this one, evaluates only what is new.  ``cancelled`` is polled while the
        history is evaluated (the first guess of a request evaluates the whole prompt)."""
        history = list(history)
        if most <= 0 or not history or len(history) + most >= self.n_ctx:
            return []
        logits, _ = self._load_prompt(history, cancelled)
        guessed: list[int] = []
        while True:
            tok = int(np.argmax(logits))
            if self._is_stop(tok):
                break
            guessed.append(tok)
            if len(guessed) == most:
                break
            logits = self._eval([tok])
        return guessed

    def _load_prompt(self, ids: list[int], cancelled: Callable[[], bool] | None = None,
                     need_logits: bool = True) -> tuple[np.ndarray | None, int]:
        """Make ``ids`` the evaluated context, reusing the longest common prefix, of the evaluated
        context or of a prompt kept aside; (logits, reused).  The evaluated prompt is kept aside
        first where ``ids`` is another buffer's (:func:`continues`)."""
        llm = self._llm
        t0 = time.perf_counter()
        most = len(ids) - 1 if need_logits else len(ids)  # for logits, always evaluate at least the last token
        common = common_prefix(llm.input_ids[: llm.n_tokens], ids, most)
        kept, shared = self._kept.best(ids, most)
        if kept is not None and shared < common + KV_RESTORE_GAIN.value:
            kept = None  # not worth its copy
        if kept is not None:
            if continues(kept.tokens, ids):
                self._kept.drop(kept)  # ids goes on from it: what is evaluated now replaces it
            else:
                self._kept.used(kept)
        evaluated = self._evaluated_prompt()
        if evaluated and not continues(evaluated, ids):
            self._keep_aside(evaluated)
        source = "context"
        if kept is not None:
            restored = self._restore(kept)
            common, source = (shared, f"kept {kept.number}") if restored else (0, "")
        common = min(common, int(llm.n_tokens))  # a cache that could not be cut back was emptied
        copy_ms = (time.perf_counter() - t0) * 1000.0
        self._reuse = {"reused_from": source if common else "", "kept_prompts": len(self._kept),
                       "kept_mib": round(self._kept.nbytes / (1 << 20), 1), "kv_copy_ms": round(copy_ms, 2)}
        if not need_logits and common == len(ids):
            return None, common  # all cached already: keep what follows too (the next prompt may share it)
        self._rewind(common)
        reused = int(llm.n_tokens)
        # until the evaluation is complete the context ends no prompt (a cancelled one is kept
        # aside as far as it got)
        self._prompt_end = None
        logits = self._eval(ids[reused:], cancelled)
        self._prompt_end = (ids, logits)
        return logits, reused

    def _evaluated_prompt(self) -> list[int]:
        """The evaluated context's prompt: the last prompt evaluated while it is held (the tokens
        generated after it left out), else the whole context."""
        if self._prompt_end is not None:
            return self._prompt_end[0]
        return [int(t) for t in self._llm.input_ids[: self._llm.n_tokens]]

    def _keep_aside(self, prompt: list[int]) -> None:
        """Copy the KV cache of the evaluated ``prompt`` (the context's start) aside, with the
        logits after it where they are held."""
        if len(prompt) < KV_RESTORE_GAIN.value:
            return  # it could never save the tokens a restore must save
        lc, llm = self._lc, self._llm
        self._rewind(len(prompt))
        size = int(lc.llama_state_seq_get_size(llm.ctx, 0))
        if not size or not self._kept.fits(size):
            return
        data = (ctypes.c_uint8 * size)()
        if not lc.llama_state_seq_get_data(llm.ctx, data, size, 0):
            return
        logits = self._prompt_end[1] if self._prompt_end is not None else None
        self._kept.keep(KvState(next(self._kept_numbers), np.asarray(prompt, dtype=llm.input_ids.dtype), data, logits))

    def _restore(self, kept: KvState) -> bool:
        """Make the kept prompt the evaluated context; False (the context empty) where llama.cpp
        refused the copy."""
        lc, llm = self._lc, self._llm
        self._forget_context()
        if not lc.llama_state_seq_set_data(llm.ctx, kept.data, len(kept.data), 0):
            self._kept.drop(kept)
            self._forget_context()
            return False
        n = len(kept.tokens)
        llm.input_ids[:n] = kept.tokens
        llm.n_tokens = n
        if kept.logits is not None:
            self._prompt_end = ([int(t) for t in kept.tokens], kept.logits)
        return True

    def _prompt_logits(self, ids: list[int], cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        """The next-token logits after ``ids`` made the evaluated context: as they were computed when
        that prompt was last evaluated, where its KV cache is still held (scoring right after
        generating starts from the distribution generation started from: evaluated again, in a
        batch of another shape, llama.cpp's logits differ a little); else evaluated now."""
        llm, kept = self._llm, self._prompt_end
        if (kept is not None and len(kept[0]) == len(ids) <= llm.n_tokens
                and np.array_equal(llm.input_ids[: len(ids)], np.asarray(ids, dtype=llm.input_ids.dtype))):
            self._rewind(len(ids))
            return kept[1]
        logits, _ = self._load_prompt(ids, cancelled)
        return logits

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        """Evaluate the start of a coming prompt ahead of time (what is already cached stays), so
        that the prompt's evaluation overlaps other work; the number of tokens evaluated now (by
        this model: a draft model evaluates it too, afterwards)."""
        ids = self.tokenize(text, special=True, add_bos=True)
        if not ids or len(ids) >= self.n_ctx // 2:
            return 0  # a prompt start that long will be cut differently: leave it to the real call
        # the last token may merge with what follows once the prompt is complete: stop before it
        evaluated = self._preload_ids(ids[:-1], cancelled)
        if self._draft is not None:
            self._draft._preload_ids(ids[:-1], cancelled)
        return evaluated

    def _preload_ids(self, ids: list[int], cancelled: Callable[[], bool] | None) -> int:
        """Make ``ids`` (at least) the start of the evaluated context; the tokens evaluated now."""
        _, reused = self._load_prompt(ids, cancelled, need_logits=False)
        return max(0, len(ids) - reused)

    def forget(self) -> None:
        """Drop the evaluated context and the prompts kept aside (the next prompt is evaluated from
        its first token); a draft model's too."""
        self._kept.clear()
        self._forget_context()
        if self._draft is not None:
            self._draft.forget()

    def _forget_context(self) -> None:
        self._prompt_end = None
        if self._mem is not None:
            self._lc.llama_memory_seq_rm(self._mem, -1, 0, -1)
        self._llm.n_tokens = 0

    # ------------------------------------------------------------------ generation

    def _prompt_ids(self, prompt: Prompt, max_tokens: int) -> tuple[list[int], int, int]:
        """The tokens of a (healed) prompt that are evaluated, leaving room for ``max_tokens`` more;
        (ids, dropped, kept_head) as :meth:`_fit_prompt` gives them."""
        ids = self.tokenize(prompt.text, special=True, add_bos=True)
        if not ids:
            ids = self.tokenize(" ", special=True, add_bos=True)
        return self._fit_prompt(ids, max_tokens)

    def _fit_prompt(self, ids: list[int], max_tokens: int) -> tuple[list[int], int, int]:
        """Left-truncate ``ids`` to n_ctx - max_tokens; (ids, dropped, kept_head).

        Rule: the leading run of control tokens (BOS, a FIM prefix marker) is
        kept; the oldest tokens right after it are dropped.
        """
        budget = max(1, self.n_ctx - max(0, max_tokens))
        if len(ids) <= budget:
            return ids, 0, 0
        head = 0
        while head < len(ids) and head < budget // 2 and ids[head] in self._head_ids:
            head += 1
        tail = budget - head
        dropped = len(ids) - head - tail
        return ids[:head] + ids[len(ids) - tail :], dropped, head

    def _collect_head_ids(self) -> frozenset[int]:
        """BOS and the FIM marker tokens: kept at the start when a prompt is truncated."""
        out: set[int] = set()
        bos = self.meta.special_token_ids().get("bos")
        if bos is not None:
            out.add(bos)
        wanted = {t for t in self.fim.tokens.values() if t}
        if wanted:
            out.update(i for i, text in enumerate(self.meta.tokens) if text in wanted)
        return frozenset(out)

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None, skip: int = 0) -> list[Generation]:
        """Up to ``n`` deterministic candidates continuing ``prompt.text`` (the parts are for servers
        that take the prefix and suffix apart), the first ``skip`` of them left out.

        Branch i starts with the i-th most probable first token (stop tokens
        excluded), then continues greedily.  After each token, ``stop(text)`` is
        called with the candidate's whole text so far (a trailing incomplete UTF-8
        sequence held back); an int k ends the candidate with ``text[:k]``.  A
        candidate also ends on EOS/EOT/control tokens (not included in the text)
        and after ``max_tokens`` tokens.

        ``deadline_s`` is a wall-clock budget in seconds for generating, counted
        from the end of prompt evaluation (a cold prompt takes what it takes; the
        budget bounds what the user waits beyond it).  A branch running past it ends with
        finish='deadline' and keeps its text; branches not started by then are
        left out (so fewer than ``n`` may come back).  Candidates come back in
        branch order (most probable first token first).

        ``cancelled`` is polled during prompt evaluation and between tokens; when it
        returns true the call raises :class:`Cancelled` (the KV cache stays usable).
        """
        t0 = time.perf_counter()
        n, max_tokens = generation_counts(n, max_tokens)
        prompt = self.heal(as_prompt(prompt))
        healed = (prompt.healed or "").encode("utf-8")
        ids, dropped, head = self._prompt_ids(prompt, max_tokens)

        # a warm (n 0) needs no logits: a prompt evaluated already is then evaluated no further
        logits, reused = self._load_prompt(ids, cancelled, need_logits=n > 0)
        t1 = time.perf_counter()
        end_at = t1 + deadline_s if deadline_s is not None else None
        stats: dict[str, Any] = {
            "prompt_tokens": len(ids),
            "reused_tokens": reused,
            "prompt_ms": (t1 - t0) * 1000.0,
            "gen_ms": 0.0,
            "truncated_tokens": dropped,
            **self._reuse,
        }
        if dropped:
            stats["truncation"] = (
                f"dropped the {dropped} oldest prompt tokens after the first {head} "
                f"control token(s) to fit n_ctx={self.n_ctx} - max_tokens={max_tokens}"
            )
        if healed:
            stats["healed"] = prompt.healed
        self.last_stats = stats
        if n == 0:  # the prompt only, kept evaluated for the request to come (warming)
            if self._draft is not None:
                self._draft._preload_ids(ids, cancelled)
            return []

        lp0 = log_softmax(logits)
        out: list[Generation] = []
        tally = _Tally()
        for first, first_lp in self._first_tokens(lp0, n, healed)[max(0, skip):]:
            if end_at is not None and time.perf_counter() >= end_at and out:
                break
            steps = _Lookahead(self, ids, self._proposer, tally, cancelled)
            out.append(self._branch(steps, first, first_lp, healed, max_tokens, stop, end_at, cancelled))
        stats["gen_ms"] = (time.perf_counter() - t1) * 1000.0
        if self._proposer is not None:
            stats["speculation"] = tally.report()
        return out

    def score_continuations(self, prompt: Prompt | str, texts: Sequence[str], most: int,
                            ends: Callable[[str], bool] | None = None,
                            cancelled: Callable[[], bool] | None = None,
                            deadline_s: float | None = None) -> list[Generation | None]:
        """Each text scored as a candidate continuing ``prompt``: its tokens (as the tokenizer cuts
        the backed-off text followed by it), each with the log-probability a branch of
        :meth:`generate_candidates` gives it, the backed-off text's constraint and renormalization
        included, so that a scored text and a generated candidate have comparable confidences.

        Pruned first at no cost: only the ``most`` texts whose first token is the most probable
        after the prompt (the distribution generation starts from, kept from the prompt's
        evaluation) are scored in full, each after the prompt's KV cache; the others, and a text
        no step may take, come back None.
        ``ends``: the text must also end there, as the stop rule ends a symbol: the probability that
        the next token is a stop token or one whose text starts with a character ``ends`` accepts
        is counted as one more token, as the token that triggers a stop is for a generated one.
        ``deadline_s``: seconds from now after which no further text is scored (the first is)."""
        end_at = time.perf_counter() + deadline_s if deadline_s is not None else None
        prompt = self.heal(as_prompt(prompt))
        healed = (prompt.healed or "").encode("utf-8")
        paths = [self.tokenize(prompt.healed + text, special=False) if text else [] for text in texts]
        ids, _, _ = self._prompt_ids(prompt, max((len(p) for p in paths), default=0) + 1)
        lp0 = log_softmax(self._prompt_logits(ids, cancelled))
        first_allowed = self._allowed(healed, b"")
        firsts = {i: _logprob_of(p[0], lp0, first_allowed) for i, p in enumerate(paths) if p}
        ranked = sorted((i for i, lp in firsts.items() if lp is not None), key=lambda i: -firsts[i])
        ending = self._ending_tokens(ends) if ends is not None else None
        out: list[Generation | None] = [None] * len(texts)
        for k, i in enumerate(ranked[: max(0, most)]):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled while scoring")
            if k and end_at is not None and time.perf_counter() >= end_at:
                break
            out[i] = self._score_path(len(ids), paths[i], texts[i], healed, lp0, ending)
        self._back_to_prompt(len(ids))
        return out

    def _score_path(self, prompt_len: int, path: list[int], text: str, healed: bytes, lp0: np.ndarray,
                    ending: np.ndarray | None) -> Generation | None:
        """The tokens ``path`` after the prompt, scored step by step as :meth:`_branch` scores them."""
        tb = time.perf_counter()
        self._back_to_prompt(prompt_len)
        lp, raw, logprob, retyped = lp0, b"", 0.0, 0
        for k, tok in enumerate(path):
            step = _logprob_of(tok, lp, self._allowed(healed, raw))
            if step is None:
                return None
            logprob += step
            raw += self._piece(tok)
            retyped += _retypes(healed, raw)
            if k + 1 < len(path) or ending is not None:
                # one token a decode, as a branch evaluates it: llama.cpp's logits differ with the
                # batch's shape (by up to half a nat over a few tokens, measured here), and for the few
                # tokens of a name one decode of them all was no faster
                lp = log_softmax(self._eval([tok]))
        n_tokens = len(path) - retyped
        if ending is not None:
            logprob += float(np.logaddexp.reduce(lp[ending]))
            n_tokens += 1
        return Generation(text=text, logprob=logprob, n_tokens=n_tokens, finish="steered",
                          ms=(time.perf_counter() - tb) * 1000.0, token_ids=tuple(path))

    def _ending_tokens(self, ends: Callable[[str], bool]) -> np.ndarray:
        """The ids after which a text has ended: stop tokens, and those whose text starts with a
        character ``ends`` accepts (computed once per ``ends``)."""
        found = self._ending_cache.get(ends)
        if found is None:
            starts = [self._piece(t).decode("utf-8", errors="ignore")[:1] for t in range(self._n_vocab)]
            found = np.fromiter((t for t in range(self._n_vocab) if self._is_stop(t) or (starts[t] and ends(starts[t]))),
                                dtype=np.int64)
            self._ending_cache[ends] = found
        return found

    def _allowed(self, healed: bytes, generated: bytes) -> np.ndarray | None:
        """The ids the next token may be while ``generated`` has not reproduced ``healed`` yet; None
        once it has (any token may follow)."""
        if len(generated) >= len(healed):
            return None
        return self._vocabulary.allowed(healed[len(generated):])

    def _first_tokens(self, lp0: np.ndarray, n: int, healed: bytes) -> list[tuple[int, float]]:
        """The ``n`` most probable first tokens with their log-probabilities: stop tokens left out,
        and with a backed-off text only the tokens that reproduce its start or all of it (their
        probabilities renormalized over those, as in :meth:`_branch`)."""
        allowed, renormalized = _choices(lp0, self._allowed(healed, b""))
        if allowed is not None:
            best = np.argsort(-renormalized, kind="stable")[:n]
            return [(int(allowed[i]), float(renormalized[i])) for i in best]
        firsts: list[tuple[int, float]] = []
        for tok in np.argsort(-lp0, kind="stable")[: n + len(self._stop_ids) + 8]:
            t = int(tok)
            if not self._is_stop(t):
                firsts.append((t, float(lp0[t])))
                if len(firsts) == n:
                    break
        return firsts

    def _branch(
        self,
        steps: _Lookahead,
        first: int,
        first_lp: float,
        healed: bytes,
        max_tokens: int,
        stop: Callable[[str], int | None],
        end_at: float | None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """One greedy branch from ``first``. While the backed-off text ``healed`` is not reproduced,
        each token is the most probable of those that go on as it does, and its log-probability is
        renormalized over them: what the user typed is given, so the score is the probability of
        the suggestion given it, comparable to a prompt that needed no healing. A token that only
        re-types backed-off text is not counted in ``n_tokens`` (nor in ``max_tokens``): the score
        stays a mean over the tokens that carry the suggestion, while the odd split of the typed
        text still costs its probability.  ``steps`` gives the logits after the tokens so far."""
        tb = time.perf_counter()
        toks = [first]
        logprob = first_lp
        raw = self._piece(first)
        retyped = int(_retypes(healed, raw))  # tokens that only re-type the backed-off text
        finish = "length"
        text: str | None = None
        while True:
            if len(raw) >= len(healed):
                shown = raw[len(healed):]
                usable = shown[: utf8_complete_len(shown)].decode("utf-8", errors="replace")
                k = stop(usable)
                if k is not None:
                    text = usable[: max(0, int(k))]
                    finish = "stop"
                    break
            if len(toks) - retyped >= max_tokens:
                finish = "length"
                break
            if end_at is not None and time.perf_counter() >= end_at:
                finish = "deadline"
                break
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled during generation")
            allowed = self._allowed(healed, raw)
            lp = log_softmax(steps.after(toks, max_tokens - (len(toks) - retyped), allowed))
            if allowed is not None and not allowed.size:  # no token goes on with the typed text: give up
                finish = "eos"
                break
            nxt, step_lp = _pick(lp, allowed)
            if allowed is None and self._is_stop(nxt):
                finish = "eos"
                break
            toks.append(nxt)
            logprob += step_lp
            raw += self._piece(nxt)
            retyped += _retypes(healed, raw)
        if text is None:
            shown = raw[len(healed):]
            text = shown[: utf8_complete_len(shown)].decode("utf-8", errors="replace")
        return Generation(
            text=text,
            logprob=logprob,
            n_tokens=len(toks) - retyped,
            finish=finish,
            ms=(time.perf_counter() - tb) * 1000.0,
            token_ids=tuple(toks),
        )

    def close(self) -> None:
        """Free the model, the prompts kept aside, and the draft model (this model's)."""
        draft = getattr(self, "_draft", None)
        if draft is not None:
            draft.close()
        kept = getattr(self, "_kept", None)
        if kept is not None:
            kept.clear()
        if getattr(self, "_batch", None) is not None:
            self._lc.llama_batch_free(self._batch)
            self._batch = None
        llm = getattr(self, "_llm", None)
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()
            self._llm = None

    def __repr__(self) -> str:
        return f"LocalModel({self.name!r}, fim={self.fim.family}, n_ctx={getattr(self, 'n_ctx', '?')})"


def _margin(logits: np.ndarray, allowed: np.ndarray | None) -> float:
    """How far the most probable token (of ``allowed``, None: of all) leads the next, in nats."""
    among = logits if allowed is None else logits[allowed]
    if among.size < 2:
        return float("inf")
    top2 = np.partition(among, among.size - 2)[-2:]
    return float(top2[1] - top2[0])


@dataclasses.dataclass
class _Tally:
    """What speculative decoding did over one request's branches."""

    proposed: int = 0  # tokens guessed and evaluated
    accepted: int = 0  # guessed tokens the branch then picked itself
    passes: int = 0  # model evaluations during the branches
    steps: int = 0  # tokens decided from those evaluations
    propose_ms: float = 0.0  # time spent guessing (the draft model's passes, prompt lookup)

    def report(self) -> dict[str, Any]:
        return {"proposed": self.proposed, "accepted": self.accepted, "propose_ms": round(self.propose_ms, 2),
                "acceptance": self.accepted / self.proposed if self.proposed else 0.0,
                "passes": self.passes, "tokens": self.steps,
                "tokens_per_pass": self.steps / self.passes if self.passes else 0.0}


class _Lookahead:
    """The logits a branch decides each next token from.  Each pass evaluates the branch's tokens
    not evaluated yet (normally its last one) and, with a proposer, the tokens guessed to follow,
    keeping the logits after each: while the branch goes on as guessed, its next logits are already
    there.  Where it leaves the guesses, the guessed tokens it did not take are rewound."""

    def __init__(self, model: LocalModel, prompt: list[int], proposer: Proposer | None, tally: _Tally,
                 cancelled: Callable[[], bool] | None = None) -> None:
        self.model, self.prompt, self.proposer, self.tally = model, prompt, proposer, tally
        self.cancelled = cancelled  # the request's: a draft model's evaluation polls it
        self.known = 0  # the branch's tokens before the last pass
        self.guessed: list[int] = []  # what that pass evaluated after them, guessed
        self.logits: list[np.ndarray] = []  # the logits after the pass's branch tokens and each guess
        # the branch's first tokens whose cache entries were evaluated one token a pass, as plain
        # decoding evaluates them (llama.cpp's results differ slightly with the pass's size)
        self.exact = 0
        model._back_to_prompt(len(prompt))

    def after(self, toks: list[int], most: int, allowed: np.ndarray | None) -> np.ndarray:
        """The logits after ``toks`` (the branch's tokens so far, which only grow); ``most``: how
        many more tokens the branch may still take; ``allowed``: the ids it may take next (None: all)."""
        self.tally.steps += 1
        ahead = len(toks) - self.known - 1  # the guesses toks has taken since the last pass
        if 0 < ahead <= len(self.guessed) and toks[self.known + 1:] == self.guessed[:ahead]:
            self.tally.accepted += 1
            row = self.logits[ahead]
        else:
            row = self._pass(toks, most)
        if self.exact < len(toks) and _margin(row, allowed) < _TIE_MARGIN:
            row = self._replay(toks)
        return row

    def _replay(self, toks: list[int]) -> np.ndarray:
        """The logits after ``toks`` as plain decoding computes them: the branch's tokens evaluated
        in passes of several are evaluated again one at a time.  Only near a tie: there the small
        difference of the cache those passes left may change the pick."""
        model = self.model
        model._back_to_prompt(len(self.prompt) + self.exact)
        for tok in toks[self.exact:]:
            row = model._eval([tok])
        self.tally.passes += len(toks) - self.exact
        self.exact, self.known, self.guessed, self.logits = len(toks), len(toks) - 1, [], [row]
        return row

    def _pass(self, toks: list[int], most: int) -> np.ndarray:
        """Evaluate what the KV cache lacks of ``toks`` and the tokens guessed after them; the
        logits after ``toks``."""
        taken = self.known + 1 if self.logits else 0  # branch tokens in the KV cache, as the last pass left it
        while taken < len(toks) - 1 and taken - self.known - 1 < len(self.guessed) \
                and toks[taken] == self.guessed[taken - self.known - 1]:
            taken += 1
        model = self.model
        model._back_to_prompt(len(self.prompt) + taken)
        fresh = toks[taken:]
        room = model.n_ctx - len(self.prompt) - len(toks) - 1
        proposing = time.perf_counter()
        guessed = self.proposer.propose(self.prompt + toks, min(most - 1, room), self.cancelled) if self.proposer else []
        self.tally.propose_ms += (time.perf_counter() - proposing) * 1000.0
        self.tally.passes += 1
        self.tally.proposed += len(guessed)
        self.known, self.guessed = len(toks) - 1, guessed
        self.logits = model._eval_each(fresh + guessed)[len(fresh) - 1:] if guessed else [model._eval(fresh)]
        self.exact = min(self.exact, taken)
        if not guessed and fresh == toks[-1:] and self.exact == taken:
            self.exact = len(toks)
        return self.logits[0]


__all__ = ["LocalModel", "log_softmax", "utf8_complete_len"]
