"""Labels and addressee decided together, so they never contradict the taxonomy.

The heads score each label and the addressee independently, and alone they can say
"addressed to Russia's public" without `civilians`, or `threat` for a post to mothers.
The taxonomy ties some labels to the addressee (TAXONOMY.md, and the audit rules in
models/data/AUDIT.md; 520 of the 526 labelled appeals follow them, the 6 others are in train):

* ``family`` is exactly the appeals to soldiers' families: ``ru_families``, and the
  rare appeals to Ukrainian families, which are filed under ``ua_public``;
* ``civilians`` is exactly the appeals to a general population: ``ru_public`` and the
  rest of ``ua_public``;
* ``threat`` is for troops only (``ru_military``, ``ua_military``).

So the decision is a joint one: over the addressees and the label states each allows,
pick the highest sum of the addressee's log-probability and each tied label's log-odds
against its own threshold. Labels not tied to the addressee (surrender, desertion, pow)
keep their independent thresholds. This is the same arithmetic as before wherever the
heads agree with each other; it only settles their disagreements by the rule.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# addressee -> the allowed (family, civilians, threat-allowed) states
_ALLOWED: dict[str, tuple[tuple[bool, bool, bool], ...]] = {
    "ru_military": ((False, False, True),),
    "ua_military": ((False, False, True),),
    "ru_families": ((True, False, False),),
    "ru_public": ((False, True, False),),
    "ua_public": ((True, False, False), (False, True, False)),
}


def _log_odds(p: float, threshold: float) -> float:
    """How far a label's probability is past its threshold, in logits (> 0: on)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)) - np.log(t / (1 - t)))


def decide_labels(
    label_scores: Mapping[str, float],
    thresholds: Mapping[str, float],
    addressee_probs: Mapping[str, float],
) -> tuple[tuple[str, ...], str]:
    """The labels (in ``label_scores`` order) and the addressee of one appeal."""
    z = {name: _log_odds(p, thresholds.get(name, 0.5)) for name, p in label_scores.items()}
    best: tuple[float, str, tuple[bool, bool, bool]] | None = None
    for addressee, p in addressee_probs.items():
        for state in _ALLOWED.get(addressee, ((False, False, True),)):
            family, civilians, threat_ok = state
            score = float(np.log(max(p, 1e-12)))
            score += z.get("family", 0.0) if family else 0.0
            score += z.get("civilians", 0.0) if civilians else 0.0
            score += max(z.get("threat", 0.0), 0.0) if threat_ok else 0.0
            if best is None or score > best[0]:
                best = (score, addressee, state)
    assert best is not None, "no addressee scores"
    _, addressee, (family, civilians, threat_ok) = best
    on: dict[str, bool] = {name: v > 0 for name, v in z.items()}
    on["family"], on["civilians"] = family, civilians
    on["threat"] = threat_ok and on.get("threat", False)
    labels = tuple(name for name in label_scores if on.get(name))
    if not labels:
        # every appeal has a label; only a state without family and civilians gets here, and
        # those are the troops' states, so the likeliest label not tied to a population
        free = [n for n in label_scores if n not in ("family", "civilians")]
        labels = (max(free, key=lambda n: z[n]),) if free else ()
    return labels, addressee
