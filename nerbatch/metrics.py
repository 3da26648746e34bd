"""Entity-level precision, recall and F1: exact span and type match on IOB2."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from nerbatch.decode import iob2_spans


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn, "predicted": tp + fp}


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], types: Iterable[str] = ()) -> dict:
    """Micro and macro P/R/F1 plus per-type figures over whole tag sequences; ``types`` (a model's) are
    listed even when neither gold nor prediction holds one, so a report's keys do not depend on the sample."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted hold different numbers of sentences")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for sent_gold, sent_pred in zip(gold, predicted):
        if len(sent_gold) != len(sent_pred):
            raise ValueError("a predicted sentence differs in length from its gold sentence")
        gold_spans = set(iob2_spans(sent_gold))
        pred_spans = set(iob2_spans(sent_pred))
        for span in gold_spans & pred_spans:
            tp[span.label] += 1
        for span in pred_spans - gold_spans:
            fp[span.label] += 1
        for span in gold_spans - pred_spans:
            fn[span.label] += 1
    types = sorted(set(tp) | set(fp) | set(fn) | set(types))
    per_type = {t: _prf(tp[t], fp[t], fn[t]) for t in types}
    micro = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    gold_types = [t for t in types if per_type[t]["support"]]
    macro_f1 = sum(per_type[t]["f1"] for t in gold_types) / len(gold_types) if gold_types else 0.0
    return {"micro": micro, "macro_f1": macro_f1, "per_type": per_type}


def format_table(scores: dict) -> str:
    lines = [f"{'type':<8}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in scores["per_type"].items():
        lines.append(f"{name:<8}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10d}")
    m = scores["micro"]
    lines.append(f"{'micro':<8}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10d}")
    lines.append(f"{'macro':<8}{'':>10}{'':>10}{scores['macro_f1']:>10.4f}")
    return "\n".join(lines)
