"""SYNTHETIC DPR-format corpora of any size, made by recombining SQuAD paragraphs (for scale benchmarks).

Nothing here is real Wikipedia: every passage is sentences of one SQuAD v1.1 article, drawn at random
and cut to a DPR passage's length, under that article's title. Such a corpus has the *shape* of DPR's
``psgs_w100.tsv`` (``id<TAB>text<TAB>title`` with DPR's header and csv quoting, integer ids from 1,
real English words, so tokenization and encoding cost what they cost on Wikipedia) and is good for
speed, memory, disk and ANN-recall measurements only. Every report that uses one says "SYNTHETIC".

Lengths follow DPR's splitting of Wikipedia: articles are cut into 100-word passages, so most
passages have exactly 100 words and the last passage of each article is shorter. Here an article has
a geometric number of passages (mean :data:`MEAN_PASSAGES_PER_ARTICLE`, about 21M passages over
3.2M articles in DPR's dump) and its last one has a uniform 1..99 words.

The output is a pure function of ``(source file, count, seed)``: the same arguments give the same
bytes.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.corpus.reader import DPR_TSV_HEADER, Passage
from fastdpr.corpus.squad import load_squad_passages

#: Words per passage in DPR's psgs_w100.tsv.
PASSAGE_WORDS = 100
#: 21,015,324 passages from ~3.2M articles (DPR paper, section 4.1 and its Wikipedia dump).
MEAN_PASSAGES_PER_ARTICLE = 6.5
SYNTHETIC_NOTE = ("SYNTHETIC corpus: SQuAD v1.1 sentences recombined into DPR-shaped 100-word passages "
                  "(not Wikipedia); good for speed, memory, disk and ANN recall, not for answer recall")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class _Article:
    title: str
    sentences: tuple[tuple[str, ...], ...]  # each sentence as its words


def _articles(squad_file: Path) -> list[_Article]:
    """SQuAD's articles, as sentences of words (paragraph order, then sentence order)."""
    by_title: dict[str, list[tuple[str, ...]]] = {}
    for passage in load_squad_passages(squad_file):
        sentences = by_title.setdefault(passage.title, [])
        for sentence in _SENTENCE_END.split(passage.text):
            if words := tuple(sentence.split()):
                sentences.append(words)
    return [_Article(title, tuple(sentences)) for title, sentences in by_title.items()]


def synthetic_passages(squad_file: Path | str, count: int, seed: int = 0) -> Iterator[Passage]:
    """``count`` SYNTHETIC passages with ids ``"1"``.. ``str(count)``: see the module docstring."""
    articles = _articles(Path(squad_file))
    rng = np.random.default_rng(seed)
    made = 0
    while made < count:
        article = articles[int(rng.integers(len(articles)))]
        passages = int(rng.geometric(1.0 / MEAN_PASSAGES_PER_ARTICLE))
        for number in range(min(passages, count - made)):
            last = number == passages - 1 and passages > 1
            words = int(rng.integers(1, PASSAGE_WORDS)) if last else PASSAGE_WORDS
            made += 1
            yield Passage(id=str(made), title=article.title, text=" ".join(_draw_words(article, words, rng)))


def _draw_words(article: _Article, words: int, rng: np.random.Generator) -> list[str]:
    """``words`` words of whole sentences of ``article`` starting at a random one (wrapping around), the
    last sentence cut: like DPR's passages, which start and end mid-sentence anywhere."""
    out: list[str] = []
    at = int(rng.integers(len(article.sentences)))
    while len(out) < words:
        out.extend(article.sentences[at % len(article.sentences)])
        at += 1 + int(rng.integers(3))  # skip 0-2 sentences: recombined, not the article verbatim
    return out[:words]


def write_synthetic_corpus(squad_file: Path | str, out: Path | str, count: int, seed: int = 0) -> dict[str, Any]:
    """Write ``count`` SYNTHETIC passages to ``out`` as a DPR TSV (header, csv quoting, ``\\n`` lines);
    returns a description of it (marked synthetic) for benchmark reports."""
    digest = hashlib.sha256()
    words = 0
    with Path(out).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(DPR_TSV_HEADER)
        for passage in synthetic_passages(squad_file, count, seed):
            writer.writerow((passage.id, passage.text, passage.title))
            words += passage.text.count(" ") + 1
    with Path(out).open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return {"synthetic": True, "note": SYNTHETIC_NOTE, "source": str(squad_file), "passages": count, "seed": seed,
            "mean_words": round(words / max(count, 1), 2), "bytes": Path(out).stat().st_size,
            "sha256": digest.hexdigest()}
