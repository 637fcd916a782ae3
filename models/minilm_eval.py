"""The minilm-l6 accuracy gate and its fixed evaluation set (pure numpy: no torch, no downloads).

The evaluation set is generated deterministically from word lists:

* a paraphrase-retrieval task — each query ("the chef repaired the old car yesterday morning.")
  has one paraphrase in the corpus ("Early yesterday, the cook fixed the aging vehicle."), hidden
  among hundreds of hard distractors worded the same way with one or two facts changed;
* very short texts (single words, numbers, punctuation, non-ASCII), which quantize worst;
* long texts, some of them over the 256-token context (truncated there).

The hard texts (``models.hard_texts``: short replies, punctuation, emoji, many scripts, code,
URLs, log lines, over-long texts) are gated beside it, with stricter thresholds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

SEED = 1234

SUBJECTS = [
    ("the chef", "the cook"), ("my neighbor", "the person next door"),
    ("the teacher", "the instructor"), ("a young boy", "a little kid"),
    ("the doctor", "the physician"), ("an old woman", "an elderly lady"),
    ("the pilot", "the aviator"), ("our manager", "the boss"), ("the farmer", "the grower"),
    ("a student", "a pupil"), ("the police officer", "the cop"), ("my sister", "my sibling"),
    ("the lawyer", "the attorney"), ("a tourist", "a traveller"), ("the mechanic", "the repairman"),
    ("the singer", "the vocalist"),
]
ACTIONS = [
    ("repaired the old car", "fixed the aging vehicle"),
    ("bought fresh vegetables", "purchased fresh produce"),
    ("cleaned the kitchen", "tidied up the kitchen"),
    ("wrote a long letter", "composed a lengthy letter"),
    ("lost the house keys", "misplaced the keys to the house"),
    ("painted the fence", "put a coat of paint on the fence"),
    ("cancelled the meeting", "called off the meeting"),
    ("booked a flight", "reserved a plane ticket"),
    ("read the report", "went through the report"),
    ("started a business", "launched a company"),
    ("broke the window", "smashed the window"),
    ("adopted a puppy", "took in a young dog"),
    ("sold the house", "found a buyer for the home"),
    ("forgot the password", "could not remember the passcode"),
    ("won the race", "came first in the competition"),
    ("baked a chocolate cake", "made a cocoa sponge in the oven"),
    ("missed the bus", "did not catch the bus"),
    ("answered the phone", "picked up the call"),
    ("planted tomatoes", "sowed tomato seeds"),
    ("fell asleep", "dozed off"),
    ("called a taxi", "ordered a cab"),
    ("watched a movie", "saw a film"),
    ("paid the bill", "settled the invoice"),
    ("quit the job", "resigned from the position"),
]
CONTEXTS = [
    ("yesterday morning", "early yesterday"), ("last weekend", "over the past weekend"),
    ("in the garden", "out in the yard"), ("at the station", "at the train depot"),
    ("after dinner", "once dinner was over"), ("before the storm", "ahead of the storm"),
    ("on monday", "at the start of the week"), ("in the city", "downtown"),
    ("during the holidays", "over the vacation"), ("at midnight", "at twelve at night"),
    ("near the river", "close to the riverbank"), ("this afternoon", "earlier today after lunch"),
]
SHORT_TEXTS = [
    "ok", "yes", "no", "hi", "hey", "thanks", "thank you", "why?", "?", "!", "...", "a", "I",
    "it", "42", "3.14", "0", "1999", "NaN", "lol", "omg", "brb", "ASAP", "FYI", "Paris", "café",
    "naïve", "東京", "🙂", "hello world", "good morning", "not bad", "see you", "C++", "e-mail",
    "u r late", "bank", "river bank", "apple", "Apple Inc.", "stop", "go", "maybe", "never",
    "always", "red", "blue car", "cold", "hot tea", "run", "ran away", "cat", "dog", "cats & dogs",
    "@home", "#1", "$100", "50%", "x", "zzz", "help!", "urgent", "cancel", "refund please",
    "where?", "who", "tomorrow", "today", "now", "late", "yes!!!", "no way", "fine", "sure",
    "ok.", "OK", "hmm", "wow", "sorry", "pizza", "weather", "news", "error 404", "login failed",
]


@dataclass(frozen=True)
class Retrieval:
    """Row indices into an embedding matrix: each query's answer is a position in ``corpus``."""

    queries: np.ndarray
    corpus: np.ndarray
    answers: np.ndarray


@dataclass(frozen=True)
class EvalSet:
    texts: list[str]
    retrieval: Retrieval
    kinds: list[str] = field(default_factory=list)  # query | paraphrase | distractor | short | long


def _sentence(subj: str, act: str, ctx: str) -> str:
    return f"{subj} {act} {ctx}."


def _paraphrase(subj: str, act: str, ctx: str) -> str:
    return f"{ctx[0].upper()}{ctx[1:]}, {subj} {act}."


def eval_set(n_queries: int = 200, seed: int = SEED) -> EvalSet:
    """≈ 1100 texts: n queries, their paraphrases, 3n hard distractors, short and long texts."""
    rng = random.Random(seed)
    triples = [(s, a, c) for s in range(len(SUBJECTS)) for a in range(len(ACTIONS))
               for c in range(len(CONTEXTS))]
    chosen = rng.sample(triples, n_queries)
    taken = set(chosen)
    queries, paraphrases, distractors = [], [], []
    for s, a, c in chosen:
        queries.append(_sentence(SUBJECTS[s][0], ACTIONS[a][0], CONTEXTS[c][0]))
        paraphrases.append(_paraphrase(SUBJECTS[s][1], ACTIONS[a][1], CONTEXTS[c][1]))
        # Hard negatives, all worded like the true paraphrase (query-worded ones would be too
        # easy to tell apart by word overlap): another action; another subject; another
        # subject and context with the same action.
        a2 = rng.choice([x for x in range(len(ACTIONS)) if x != a and (s, x, c) not in taken])
        s2 = rng.choice([x for x in range(len(SUBJECTS)) if x != s and (x, a, c) not in taken])
        s3 = rng.choice([x for x in range(len(SUBJECTS)) if x != s])
        c3 = rng.choice([x for x in range(len(CONTEXTS)) if x != c and (s3, a, x) not in taken])
        distractors += [_paraphrase(SUBJECTS[s][1], ACTIONS[a2][1], CONTEXTS[c][1]),
                        _paraphrase(SUBJECTS[s2][1], ACTIONS[a][1], CONTEXTS[c][1]),
                        _paraphrase(SUBJECTS[s3][1], ACTIONS[a][1], CONTEXTS[c3][1])]
    long_texts = [" ".join(rng.sample(queries, rng.choice([6, 12, 24, 30]))) for _ in range(20)]
    texts = queries + paraphrases + distractors + SHORT_TEXTS + long_texts
    kinds = (["query"] * len(queries) + ["paraphrase"] * len(paraphrases)
             + ["distractor"] * len(distractors) + ["short"] * len(SHORT_TEXTS)
             + ["long"] * len(long_texts))
    n = n_queries
    retrieval = Retrieval(queries=np.arange(n), corpus=np.arange(n, 5 * n),
                          answers=np.arange(n))
    return EvalSet(texts=texts, retrieval=retrieval, kinds=kinds)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(den, 1e-12)


def retrieval_top1(emb: np.ndarray, r: Retrieval) -> float:
    """Share of queries whose nearest corpus row (cosine) is their paraphrase."""
    e = emb.astype(np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sims = e[r.queries] @ e[r.corpus].T
    return float((sims.argmax(axis=1) == r.answers).mean())


@dataclass(frozen=True)
class GateResult:
    passed: bool
    mean_cosine: float
    min_cosine: float
    max_norm_error: float
    top1_ref: float | None
    top1_cand: float | None
    failures: tuple[str, ...]
    worst: tuple[tuple[int, float], ...] = ()  # (row, cosine) of the lowest rows, worst first

    def metrics(self) -> dict[str, float | None]:
        return {"mean_cosine": round(self.mean_cosine, 6), "min_cosine": round(self.min_cosine, 6),
                "max_norm_error": round(self.max_norm_error, 6),
                "retrieval_top1_ref": self.top1_ref, "retrieval_top1": self.top1_cand}


def gate(ref: np.ndarray, cand: np.ndarray, retrieval: Retrieval | None = None, *,
         min_mean: float = 0.99, min_min: float = 0.95, max_top1_drop: float = 0.02,
         max_norm_error: float = 1e-2) -> GateResult:
    """Compare candidate embeddings with the fp32 reference on the same rows."""
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape}, candidate {cand.shape}")
    finite = bool(np.isfinite(cand).all())
    cos = row_cosine(ref, cand) if finite else np.full(len(ref), -1.0)
    norm_err = float(np.abs(np.linalg.norm(cand.astype(np.float64), axis=1) - 1.0).max()) \
        if finite else float("inf")
    failures = []
    if not finite:
        failures.append("candidate has NaN or infinite values")
    if cos.mean() < min_mean:
        failures.append(f"mean cosine {cos.mean():.4f} < {min_mean}")
    if cos.min() < min_min:
        failures.append(f"minimum cosine {cos.min():.4f} < {min_min} (row {int(cos.argmin())})")
    if norm_err > max_norm_error:
        failures.append(f"embeddings not unit length: max |‖v‖-1| {norm_err:.3g}")
    top_ref = top_cand = None
    if retrieval is not None:
        top_ref, top_cand = retrieval_top1(ref, retrieval), retrieval_top1(cand, retrieval)
        if top_cand < top_ref - max_top1_drop - 1e-12:
            failures.append(f"retrieval top-1 {top_cand:.3f} vs fp32 {top_ref:.3f} "
                            f"(allowed drop {max_top1_drop})")
    worst = tuple((int(i), round(float(cos[i]), 6)) for i in np.argsort(cos, kind="stable")[:10])
    return GateResult(not failures, float(cos.mean()), float(cos.min()), norm_err,
                      top_ref, top_cand, tuple(failures), worst)
