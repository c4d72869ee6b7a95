"""A corpus every Python ships: the Python docs' topic texts (``pydoc_data.topics``), in passages.

It is the embedded default for the demo and the source of the probe passages, so fastdpr works
offline on any machine without downloading a corpus.
"""

from __future__ import annotations

import re

from fastdpr.corpus.reader import Passage

WORDS_PER_PASSAGE = 100  # DPR's psgs_w100 splits Wikipedia into 100-word passages; we do the same.


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics  # stdlib, but absent from some stripped Python builds

    return dict(topics)


def pydoc_topic_passages(words_per_passage: int = WORDS_PER_PASSAGE) -> list[Passage]:
    """Every pydoc topic, split into passages of ``words_per_passage`` words (the last may be shorter).

    Ids are ``<topic>/<n>``; titles are the topic names with dashes as spaces ("atom identifiers").
    Order is deterministic (topics sorted by name), so probes drawn from it are stable.
    """
    passages: list[Passage] = []
    for topic, body in sorted(_topics().items()):
        words = re.sub(r"\s+", " ", body).strip().split(" ")
        title = topic.replace("-", " ")
        for n, start in enumerate(range(0, len(words), words_per_passage)):
            text = " ".join(words[start:start + words_per_passage])
            if text:
                passages.append(Passage(id=f"{topic}/{n}", title=title, text=text))
    return passages
