"""The built-in synthetic corpus: generated from a seed, no download, and hard in the right ways.

Generative story (also in docs/data.md):

1. A vocabulary of ``vocab_words`` pseudo-words (syllable strings). Word ``r`` has background
   probability proportional to ``1 / (r + 1) ** zipf_exponent`` (Zipf).
2. Two hidden attributes, a topic ``t`` (``num_topics`` values) and a stance ``s`` (``num_stances``
   values). The class is a fixed random table ``label = table[t, s]`` with every class appearing
   equally often, so no single attribute decides the class: the model must combine the evidence of
   two groups of words (a too-narrow ``embedding_dim`` cannot keep both apart).
3. Each attribute value owns ``cue_words`` words drawn log-uniformly from the ranks past
   ``cue_min_rank``: some mid-frequency, many rare (a too-small vocabulary cutoff loses them).
4. A document of class ``table[t, s]`` has a Poisson(``doc_length``) number of background tokens
   plus Poisson(``cue_tokens``) cue tokens of its topic and as many of its stance, each cue chosen
   with probability proportional to ``rank ** -0.5`` within its group, then shuffled.
5. With probability ``label_noise`` the label is replaced by a uniformly random class.
"""

from __future__ import annotations

import numpy as np

_CONSONANTS = list("bdfgklmnprstvz") + ["ch", "sh", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def make_words(count: int, rng: np.random.Generator) -> list[str]:
    """Return ``count`` distinct pronounceable pseudo-words of 2 to 4 syllables."""
    syllables = np.array([c + v for c in _CONSONANTS for v in _VOWELS])
    n = len(syllables)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        need = count - len(words)
        lengths = rng.integers(2, 5, size=need * 2)
        picks = rng.integers(0, n, size=(need * 2, 4))
        for length, row in zip(lengths, picks, strict=True):
            word = "".join(syllables[row[:length]])
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == count:
                    break
    return words


def draw_background(rng: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    """``rng.choice(len(p), size, p=p)`` drawn in chunks into int32: the same draws (one uniform
    per token, inverse CDF), without 16 bytes of temporaries per token for large corpora."""
    cdf = p.cumsum()
    cdf /= cdf[-1]
    out = np.empty(size, dtype=np.int32)
    for start in range(0, size, 1 << 22):
        stop = min(start + (1 << 22), size)
        out[start:stop] = cdf.searchsorted(rng.random(stop - start), side="right")
    return out


def generate(
    *,
    seed: int,
    num_docs: int = 10000,
    num_classes: int = 4,
    vocab_words: int = 20000,
    doc_length: float = 40.0,
    zipf_exponent: float = 1.1,
    num_topics: int = 4,
    num_stances: int = 6,
    cue_words: int = 100,
    cue_min_rank: int = 500,
    cue_tokens: float = 6.0,
    label_noise: float = 0.02,
) -> tuple[list[str], list[str]]:
    """Generate ``num_docs`` documents; return (texts, labels) with labels as ``class_<i>``."""
    check(num_classes, num_topics, num_stances, cue_min_rank, vocab_words)
    rng = np.random.default_rng(seed)
    words = np.array(make_words(vocab_words, rng))

    ranks = np.arange(vocab_words, dtype=np.float64)
    background = (ranks + 1.0) ** -zipf_exponent
    background /= background.sum()

    # Every class appears equally often in the (topic, stance) table, in a random arrangement.
    cells = num_topics * num_stances
    table = rng.permutation(np.arange(cells) % num_classes).reshape(num_topics, num_stances)
    cues = cue_table(rng, num_topics + num_stances, cue_words, cue_min_rank, vocab_words)

    topics = rng.integers(0, num_topics, size=num_docs)
    stances = rng.integers(0, num_stances, size=num_docs)
    labels = table[topics, stances]
    noisy = rng.random(num_docs) < label_noise
    labels[noisy] = rng.integers(0, num_classes, size=int(noisy.sum()))

    n_background = np.maximum(rng.poisson(doc_length, size=num_docs), 1)
    n_topic_cues = rng.poisson(cue_tokens, size=num_docs)
    n_stance_cues = rng.poisson(cue_tokens, size=num_docs)
    parts = [
        (draw_background(rng, background, int(n_background.sum())), n_background),
        (draw_cues(rng, cues, topics, n_topic_cues), n_topic_cues),
        (draw_cues(rng, cues, num_topics + stances, n_stance_cues), n_stance_cues),
    ]
    return assemble(rng, words.tolist(), parts, num_docs), [f"class_{c}" for c in labels]


def check(num_classes, num_topics, num_stances, cue_min_rank, vocab_words) -> None:
    """Refuse settings that cannot make the corpus, naming the key."""
    if num_classes < 2:
        raise ValueError(f"data.synthetic.num_classes must be at least 2, got {num_classes}")
    if num_topics * num_stances < num_classes:
        raise ValueError(
            "data.synthetic.num_topics * num_stances must be at least num_classes "
            f"({num_topics} * {num_stances} < {num_classes})"
        )
    if cue_min_rank >= vocab_words:
        raise ValueError(
            f"data.synthetic.cue_min_rank ({cue_min_rank}) must be below vocab_words ({vocab_words})"
        )


def cue_table(rng, n_groups: int, cue_words: int, cue_min_rank: int, vocab_words: int):
    """(ranks, cumulative weights) of each attribute value's cue words: log-uniform over ranks
    [cue_min_rank, vocab_words), rarer cues drawn less often."""
    log_ranks = rng.uniform(np.log(cue_min_rank), np.log(vocab_words), size=(n_groups, cue_words))
    cue_ranks = np.minimum(np.exp(log_ranks).astype(np.int64), vocab_words - 1)
    cue_weights = (cue_ranks + 1.0) ** -0.5
    cue_weights /= cue_weights.sum(axis=1, keepdims=True)
    return cue_ranks, np.cumsum(cue_weights, axis=1)


def draw_cues(rng, cues, groups: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``counts[i]`` cue words of group ``groups[i]`` per document, in one flat array."""
    cue_ranks, cue_cdf = cues
    group_per_token = np.repeat(groups, counts)
    u = rng.random(group_per_token.size)
    # Inverse-CDF sampling within each token's group, one searchsorted per group (a
    # (tokens x cue_words) comparison would need gigabytes for a million documents).
    idx = np.empty(group_per_token.size, dtype=np.int64)
    for group in range(len(cue_cdf)):
        mask = group_per_token == group
        idx[mask] = np.searchsorted(cue_cdf[group], u[mask], side="left")
    return cue_ranks[group_per_token, np.minimum(idx, cue_ranks.shape[1] - 1)]


def assemble(rng, word_list: list[str], parts, num_docs: int) -> list[str]:
    """Each document: its run of every part (flat tokens, per-document counts), shuffled."""
    ends = [np.cumsum(counts) for _, counts in parts]
    texts: list[str] = []
    for i in range(num_docs):
        doc = np.concatenate(
            [
                tokens[end[i] - counts[i] : end[i]]
                for (tokens, counts), end in zip(parts, ends, strict=True)
            ]
        )
        rng.shuffle(doc)
        texts.append(" ".join([word_list[w] for w in doc.tolist()]))  # Python strings: fast joins
    return texts
