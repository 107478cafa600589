"""Sentences out of reviews: a regex splitter and a seeded sampler, for the short-text measurement and
the transfer set's sentences (the sentences stage).

The splitter is a regular expression, not NLTK's Punkt or spaCy: no dependency (and no model files
to fetch offline), deterministic across versions, and fast enough to split the whole transfer set
in seconds. Its known error is abbreviations: "Mr. Smith" or "the U.S. version" end a sentence at
the dot. That only cuts some sentences into shorter pieces, which makes the measurement on short
texts, if anything, harder, and pieces below `min_words` are dropped.

Breaks:
- `.`, `!` or `?` (one or more, then any closing quotes or brackets), followed by whitespace or the
  end of the text; "7.5/10" or "e.g.," do not break, "..." followed by a space does;
- an HTML line break `<br />` (`<br>`, `<br/>`), as raw IMDB reviews and users' texts carry them;
- a run of two or more whitespace characters: prepare turns each `<br />` into a space
  (stages/prepare.py, `clean`), so IMDB's paragraph break `<br /><br />` is two spaces in the
  splits, and about 7% of IMDB's paragraph breaks have no end punctuation before them (measured on
  2,000 raw test reviews: 294 of 3,963), which the punctuation alone would glue together. Raw
  reviews held a double space elsewhere in 3 of those 2,000, so the rule splits little else; a
  blank line in a user's text breaks too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import groupby

import numpy as np

_BREAK = re.compile(r"<br\s*/?>|\s{2,}", re.IGNORECASE)
_END = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*(?=\s|$)""")
# A word: a whitespace-separated token with a letter or digit in it ("9/10" is one, "--" and "★" are not).
_WORD = re.compile(r"\S*\w\S*")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def fragments(text: str) -> list[str]:
    """Every piece of the text between two breaks, stripped, empty pieces left out, in order."""
    pieces = []
    for block in _BREAK.split(text):
        start = 0
        for end in _END.finditer(block):
            pieces.append(block[start:end.end()])
            start = end.end()
        pieces.append(block[start:])
    return [piece for piece in (p.strip() for p in pieces) if piece]


def numbered_sentences(text: str, min_words: int = 4) -> list[tuple[int, str]]:
    """(k, sentence) for each fragment with at least min_words words; k numbers every fragment from 0,
    the short ones too, so that a sentence keeps its number whatever min_words is."""
    return [(k, piece) for k, piece in enumerate(fragments(text)) if count_words(piece) >= min_words]


def split_sentences(text: str, min_words: int = 4) -> list[str]:
    """The sentences of a text with at least min_words words each, in order (see the module's notes)."""
    return [sentence for _, sentence in numbered_sentences(text, min_words)]


def sample_sentences(reviews: Sequence[dict], n: int, seed: int | Sequence[int],
                     min_words: int = 4) -> list[dict]:
    """n sentences drawn uniformly without replacement from all sentences of the reviews (all of them
    where there are fewer), each {"id": "<review id>/s<k>", "text"[, "label"]}: the review's label
    where it has one. The same reviews, n, seed and min_words give the same sentences, in the
    reviews' order and then the sentences'.

    seed: numpy's default_rng seed (an int, or a sequence of ints for independent streams from one
    seed). Two passes over the texts, so that memory holds one count per review and the draw, not
    every sentence of a large transfer set.
    """
    counts = np.fromiter((len(numbered_sentences(r["text"], min_words)) for r in reviews), dtype=np.int64,
                         count=len(reviews))
    total = int(counts.sum())
    if total == 0 or n == 0:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    ends = np.cumsum(counts)
    owners = np.searchsorted(ends, chosen, side="right")  # the review each chosen sentence is in
    sampled = []
    for review_index, positions in groupby(zip(owners.tolist(), chosen.tolist()), key=lambda pair: pair[0]):
        review = reviews[review_index]
        numbered = numbered_sentences(review["text"], min_words)
        first = int(ends[review_index] - counts[review_index])
        for _, position in positions:
            k, text = numbered[position - first]
            sentence = {"id": f"{review['id']}/s{k}", "text": text}
            if "label" in review:
                sentence["label"] = review["label"]
            sampled.append(sentence)
    return sampled
