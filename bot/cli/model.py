"""Users' ✅/❌ and admins' /relabel, turned into labelled examples for `appealwatch train --with-feedback`."""

from __future__ import annotations

import json
from pathlib import Path

from bot.storage import Storage
from models.training.dataset import Example


async def feedback_examples(db_path: Path) -> list[Example]:
    """The latest verdict per post wins; ✅ confirms the model's own labels."""
    storage = Storage(db_path)
    await storage.open()
    try:
        latest: dict[int, Example] = {}
        for r in await storage.feedback_rows():
            verdict = r["verdict"]
            if verdict == "not_appeal":
                labels: tuple[str, ...] = ()
            elif verdict == "relabel":
                labels = tuple(json.loads(r["labels"] or "[]"))
            else:  # correct: the model's labels stand
                labels = tuple(json.loads(r["model_labels"] or "[]"))
            appeal = bool(labels)
            addressee = (r["addressee"] or "ru_military") if appeal else None
            latest[int(r["post_id"])] = Example(
                id=f"feedback-{r['post_id']}", text=str(r["text"]), lang=str(r["lang"] or "other"), appeal=appeal,
                labels=labels, addressee=addressee, kind="feedback", split="train",
            )
        return [e for e in latest.values() if e.text.strip()]
    finally:
        await storage.close()
