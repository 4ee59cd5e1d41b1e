"""Out-of-scope abstention: when a head should say "none of my labels". Pure (numpy).

A head abstains on a text when its top calibrated probability is below a
threshold, or when its top label is the head's out-of-scope label (a class
trained on out-of-scope examples, e.g. CLINC150's ``oos``). Abstained
predictions keep their top-3 but get no label.

The threshold is chosen on validation data only:

* with out-of-scope validation texts: the threshold with the highest OOS
  recall (share of out-of-scope texts abstained on) whose in-scope accuracy
  (abstaining counts as wrong) stays within ``max_accuracy_loss`` (default
  0.5 point) of the head's in-scope accuracy without a threshold: a wrong answer
  to a real request costs more than a missed out-of-scope text. The rule
  spends its whole budget on validation, so expect in-scope accuracy about
  that much below the head's own on new texts too. With
  ``max_accuracy_loss=None``: the threshold maximising ``in-scope accuracy +
  OOS recall`` (Youden's J), which weighs both sides equally.
* without: the lowest threshold at which the answered in-scope validation
  texts reach ``target_precision`` (the head answers as often as it can while
  keeping that precision); 0 (never abstain) if the head already reaches it.

With an out-of-scope score (:mod:`embedclf.heads.oos`; ``in_discount`` /
``oos_discount``) the "top probability" above is the top probability times
the score's discount, per text: the same rule, on a better confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from embedclf.errors import DataError
from embedclf.heads.abstain import abstain_mask, labels_oos_index  # noqa: F401  (re-exported)
from embedclf.heads.oos import discounted_confidence

#: in-scope accuracy (a fraction) the OOS threshold may cost on validation
DEFAULT_MAX_ACCURACY_LOSS = 0.005
#: the kNN OOS score (heads/oos.py) used when out-of-scope validation texts choose the threshold:
#: chosen on CLINC150's val + oos_val (docs/training.md, "Out-of-scope abstention")
DEFAULT_OOS_BETA = 3.0
DEFAULT_OOS_K = 10


@dataclass(frozen=True)
class AbstainRule:
    threshold: float
    criterion: str
    #: the rule's figures on the validation texts it was chosen on
    val: dict

    def to_dict(self) -> dict:
        return asdict(self)




def scope_metrics(in_proba: np.ndarray, in_y: np.ndarray, oos_proba: np.ndarray | None,
                  threshold: float | None, oos_index: int | None = None, *,
                  in_discount: np.ndarray | None = None, oos_discount: np.ndarray | None = None) -> dict:
    """In-scope accuracy (abstaining counts as wrong), answer rate and precision, OOS recall.

    ``in_discount`` / ``oos_discount``: an OOS score's factors on the top probability (see
    :mod:`embedclf.heads.oos`), one per row; the threshold then applies to the discounted confidence."""
    in_proba, in_y = np.asarray(in_proba), np.asarray(in_y)
    abst = abstain_mask(in_proba, threshold, oos_index, in_discount)
    right = (in_proba.argmax(axis=1) == in_y) & ~abst
    answered = int((~abst).sum())
    out = {
        "in_scope_accuracy": float(right.mean()) if len(in_y) else float("nan"),
        "in_scope_answered": float(answered / len(in_y)) if len(in_y) else float("nan"),
        "answered_precision": float(right.sum() / answered) if answered else float("nan"),
        "n_in_scope": int(len(in_y)),
    }
    if oos_proba is not None and len(oos_proba):
        out["oos_recall"] = float(abstain_mask(oos_proba, threshold, oos_index, oos_discount).mean())
        out["n_oos"] = int(len(oos_proba))
    return out


def _candidates(*confs: np.ndarray | None) -> np.ndarray:
    """0 (never abstain) plus every distinct confidence seen (abstain below it)."""
    allc = np.concatenate([np.asarray(c, dtype=float) for c in confs if c is not None and len(c)])
    return np.unique(np.concatenate([[0.0], allc]))


def choose_threshold(
    in_proba: np.ndarray,
    in_y: np.ndarray,
    oos_proba: np.ndarray | None = None,
    *,
    target_precision: float = 0.95,
    oos_index: int | None = None,
    max_accuracy_loss: float | None = DEFAULT_MAX_ACCURACY_LOSS,
    in_discount: np.ndarray | None = None,
    oos_discount: np.ndarray | None = None,
) -> AbstainRule:
    """Pick the abstention threshold on validation data (see the module docstring).

    With ``in_discount`` (and ``oos_discount`` for the OOS texts) the threshold applies to the top
    probability times the discount, as a head with an OOS score does (:mod:`embedclf.heads.oos`)."""
    in_proba, in_y = np.asarray(in_proba, dtype=float), np.asarray(in_y)
    if len(in_y) == 0:
        raise DataError("choosing an abstention threshold needs in-scope validation texts")
    if not 0.0 < target_precision <= 1.0:
        raise ValueError("target precision must be in (0, 1]")
    # texts the OOS class already catches are abstained on whatever the threshold
    in_caught = abstain_mask(in_proba, None, oos_index)
    in_conf = discounted_confidence(in_proba, in_discount)
    in_ok = (in_proba.argmax(axis=1) == in_y) & ~in_caught
    oos_conf = None if oos_proba is None else discounted_confidence(oos_proba, oos_discount)
    cands = _candidates(in_conf, oos_conf)
    # answered(t) = conf >= t and not caught; counted for every candidate with sorted arrays
    def at_least(values: np.ndarray) -> np.ndarray:
        v = np.sort(values)
        return len(v) - np.searchsorted(v, cands, side="left")

    right = at_least(in_conf[in_ok])
    if oos_proba is not None and oos_conf is not None and len(oos_proba):
        oos_proba = np.asarray(oos_proba, dtype=float)
        oos_caught = abstain_mask(oos_proba, None, oos_index)
        oos_abst = (oos_caught.sum() + np.searchsorted(np.sort(oos_conf[~oos_caught]), cands,
                                                       side="left")) / len(oos_conf)
        in_acc = right / len(in_y)
        if max_accuracy_loss is None:
            best = int(np.argmax(in_acc + oos_abst))  # first maximum: the lowest threshold among equals
            criterion = "max in-scope accuracy + OOS recall on validation"
        else:
            allowed = in_acc >= in_acc[0] - max_accuracy_loss - 1e-12  # cands[0] = 0: never abstain on confidence
            best = int(np.argmax(np.where(allowed, oos_abst, -1.0)))
            criterion = (f"max OOS recall on validation losing <= {max_accuracy_loss:g} in-scope accuracy")
        threshold = float(cands[best])
    else:
        n_ans = at_least(in_conf[~in_caught])
        prec = np.where(n_ans > 0, right / np.maximum(n_ans, 1), 0.0)
        ok = np.flatnonzero(prec >= target_precision)
        # unreachable target: abstain on everything but the most confident validation answer
        threshold = float(cands[ok[0]]) if len(ok) else float(cands[-1])
        criterion = f"lowest threshold with answered precision >= {target_precision:g} on validation"
    val = scope_metrics(in_proba, in_y, oos_proba, threshold, oos_index, in_discount=in_discount,
                        oos_discount=oos_discount)
    return AbstainRule(threshold=threshold, criterion=criterion, val=val)
