"""The second stage of :func:`~embedclf.training.trainer.train_head`: TF-IDF member, mixing, temperatures. Pure.

:func:`finish_head` takes a :class:`~embedclf.training.trainer.DenseStage` (a head whose MLP and
linear members are trained) and returns the finished :class:`~embedclf.training.trainer.TrainResult`:

1. with ``tfidf_member``, a hybrid head: the dense members' weights copied into a head whose config
   carries the TF-IDF featurizer (fitted on the training part only), the sparse member fitted
   (:mod:`embedclf.training.sparse`); with ``knn_member`` a kNN member over the training part's
   embeddings (:mod:`embedclf.heads.knn`);
2. each member's temperature on validation, the mixing weights (``member_weights``: equal, fitted
   on validation, or fixed), the final temperature on the mix;
3. with ``refit`` (and a validation slice cut from the training data), the convex members (linear,
   TF-IDF) fitted again on training + validation texts, the kNN member given their vectors too (with
   ``refit_mlp`` the MLP trained again from scratch on them for the chosen epochs), temperatures and
   weights kept. The
   validation logits returned (for abstention thresholds) and the validation figures are those of
   the head *before* the refit, which had not seen those texts.

The stage is never modified (the head is copied), so ``bench heads`` finishes one stage several
ways. ``memo`` (a dict the caller keeps per stage) shares fitted featurizers and sparse members
between finishes that ask for the same ones.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch
from torch import nn

from embedclf.heads.knn import make_config as knn_config
from embedclf.heads.mlp import MLPHead
from embedclf.heads.tfidf import TfidfFeaturizer
from embedclf.training.metrics import classification_report
from embedclf.training.sparse import fit_featurizer, fit_member_weights, fit_sparse_member
from embedclf.training.trainer import (
    DenseStage,
    MlpFit,
    TrainParams,
    TrainResult,
    fit_linear,
    fit_temperature,
    fixed_weights,
    member_summary,
)

#: the entries of a head's state that depend on its member set (rebuilt, not copied)
_MEMBER_STATE = ("member_temperature", "member_weight")


def finish_head(stage: DenseStage, params: TrainParams, memo: dict | None = None) -> TrainResult:
    """Finish ``stage`` with ``params``' TF-IDF, kNN, mixing and refit settings (its dense settings are the stage's).

    ``knn_member="auto"``: the head is finished with and without the kNN member, and the member is kept
    only when it lowers the calibrated head's validation NLL (``TrainResult.knn_choice`` says which and why);
    the refit then runs on the chosen head only."""
    memo = {} if memo is None else memo
    if params.tfidf_member and (not stage.tr_texts or len(stage.va_texts) != len(stage.Xv)):
        raise ValueError("a TF-IDF member needs the texts: one per training row (and per validation row)")
    choice: dict = {}
    if params.knn_member == "auto":
        without, with_knn = (_calibrated(stage, replace(params, knn_member=v), memo) for v in ("off", "on"))
        nll = [float(nn.functional.cross_entropy(c[1] / c[2], stage.yv)) for c in (without, with_knn)]
        kept = nll[1] < nll[0]
        choice = {"mode": "auto", "kept": kept, "val_nll_without": round(nll[0], 5), "val_nll_with": round(nll[1], 5)}
        head, vlogits, temperature, members = with_knn if kept else without
    else:
        head, vlogits, temperature, members = _calibrated(stage, params, memo)
        choice = {"mode": params.knn_member, "kept": params.knn_member == "on"}
    val_metrics = classification_report(torch.softmax(vlogits / temperature, -1).numpy(), stage.yv.numpy())
    if params.refit and not stage.external_val:
        _refit(head, stage, params, members)
    head.eval()
    return TrainResult(
        head=head, labels=list(stage.labels), params=params, history=stage.history,
        best_epoch=members["mlp"]["best_epoch"], val_metrics=val_metrics, temperature=temperature,
        seconds=time.perf_counter() - stage.start, val_logits=vlogits.numpy(), val_y=stage.yv.numpy(),
        members=members, knn_choice=choice,
    )


def _calibrated(stage: DenseStage, params: TrainParams, memo: dict) -> tuple[MLPHead, torch.Tensor, float, dict]:
    """The head with its members, member temperatures, mixing weights and final temperature (before any
    refit); its validation logits (before the final temperature), that temperature and its members' facts."""
    members = copy.deepcopy(stage.members)
    Xv, yv, va_texts = stage.Xv, stage.yv, stage.va_texts
    if params.tfidf_member or params.knn_member == "on":
        head = _extended(stage, params, memo, members)
    else:
        head = copy.deepcopy(stage.head)
    if not params.tfidf_member:
        va_texts = []
    if head.num_members > 1:
        head.member_temperature.copy_(torch.tensor([members[n]["temperature"] for n in head.member_names]))
    if head.weighted:
        _set_weights(head, params, Xv, yv, va_texts)
        for name, w in zip(head.member_names, head.member_weight.tolist()):
            members[name]["weight"] = round(w, 4)
    head.eval()
    with torch.no_grad():
        vlogits = head(Xv, va_texts or None)
    temperature = fit_temperature(vlogits, yv)
    head.temperature.fill_(temperature)
    return head, vlogits, temperature, members


def _extended(stage: DenseStage, params: TrainParams, memo: dict, members: dict) -> MLPHead:
    """A head with the stage's dense members plus a fitted TF-IDF and/or kNN member; records their facts."""
    featurizer = None
    if params.tfidf_member:
        fkey = ("featurizer", params.tfidf_max_features)
        if fkey not in memo:
            memo[fkey] = fit_featurizer(stage.tr_texts, params.tfidf_max_features)
        featurizer = memo[fkey]
    knn = knn_config(params.knn_k, params.knn_temp, len(stage.Xt)) if params.knn_member == "on" else None
    head = MLPHead(replace(stage.head.config, tfidf=featurizer and featurizer.config(), knn=knn))
    dense = {k: v for k, v in stage.head.state_dict().items() if k not in _MEMBER_STATE}
    missing, unexpected = head.load_state_dict(dense, strict=False)
    if unexpected or set(missing) - {"sparse.weight", "sparse.bias", "knn.vectors", "knn.labels", *_MEMBER_STATE}:
        raise RuntimeError(f"dense state does not fit the extended head: {missing} {unexpected}")
    if featurizer is not None:
        _fit_sparse(head, featurizer, stage, params, memo, members)
    if knn is not None:
        head.set_knn(stage.Xt, stage.yt)
        assert head.knn is not None
        members["knn"] = member_summary(head.knn.logits(stage.Xv), stage.yv) | {"k": params.knn_k,
                                                                                 "temp": params.knn_temp}
    return head


def _fit_sparse(head: MLPHead, featurizer: TfidfFeaturizer, stage: DenseStage, params: TrainParams, memo: dict,
                members: dict) -> None:
    skey = ("sparse", params.tfidf_max_features, params.tfidf_alpha, params.tfidf_epochs, params.seed)
    if skey not in memo:
        facts = fit_sparse_member(head, featurizer, stage.tr_texts, stage.yt.numpy(), params.tfidf_alpha,
                                  params.tfidf_epochs, params.seed)
        assert head.sparse is not None  # the config above carries the featurizer
        with torch.no_grad():
            va_sparse = head.sparse_logits(stage.va_texts)
        memo[skey] = (head.sparse.weight.detach().clone(), head.sparse.bias.detach().clone(),
                      member_summary(va_sparse, stage.yv) | facts)
    weight, bias, summary = memo[skey]
    assert head.sparse is not None
    head.sparse.attach(featurizer)
    with torch.no_grad():
        head.sparse.weight.copy_(weight)
        head.sparse.bias.copy_(bias)
    members["tfidf"] = dict(summary)


def _set_weights(head: MLPHead, params: TrainParams, Xv: torch.Tensor, yv: torch.Tensor, va_texts: list[str]) -> None:
    """Mixing weights: fitted on validation ("fit"), else equal or fixed for the members other than kNN,
    scaled to leave the kNN member ``knn_weight`` (fixed weights may name all members, kNN last)."""
    if params.member_weights == "fit":
        with torch.no_grad():
            zs = head.member_logits(Xv, va_texts)
            logp = torch.stack([torch.log_softmax(z / t, dim=-1) for z, t in zip(zs, head.member_temperature)])
        head.member_weight.copy_(torch.from_numpy(fit_member_weights(logp, yv)).float())
        return
    fixed = fixed_weights(params.member_weights)
    n_other = head.num_members - (head.knn is not None)
    if fixed is not None and len(fixed) == head.num_members and head.knn is not None:
        head.member_weight.copy_(torch.tensor(fixed, dtype=torch.float32))
        return
    if fixed is not None and len(fixed) != n_other:
        raise ValueError(f"member_weights {params.member_weights!r}: {len(fixed)} weights for "
                         f"{head.num_members} members ({', '.join(head.member_names)})")
    w = [1.0 / n_other] * n_other if fixed is None else list(fixed)
    if head.knn is not None:
        w = [v * (1.0 - params.knn_weight) for v in w] + [params.knn_weight]
    head.member_weight.copy_(torch.tensor(w, dtype=torch.float32))


def _refit(head: MLPHead, stage: DenseStage, params: TrainParams, members: dict) -> None:
    """Fit the convex members again on training + validation rows (see the module docstring)."""
    X_all = torch.cat([stage.Xt, stage.Xv])
    y_all = torch.cat([stage.yt, stage.yv])
    if head.linear is not None:
        members["linear"]["refit_lbfgs_iterations"] = fit_linear(head, X_all, y_all, params.linear_c)
    if head.sparse is not None:
        assert head.sparse.featurizer is not None  # attached in _hybrid
        fit_sparse_member(head, head.sparse.featurizer, stage.tr_texts + stage.va_texts, y_all.numpy(),
                          params.tfidf_alpha, params.tfidf_epochs, params.seed)
    if head.knn is not None:
        head.set_knn(X_all, y_all)
    if params.refit_mlp:
        members["mlp"]["refit_epochs"] = _refit_mlp(head, stage, params, X_all, y_all, members["mlp"]["best_epoch"])
    for name in members:
        if name != "mlp" or params.refit_mlp:
            members[name]["refit_on"] = int(len(y_all))


def _refit_mlp(head: MLPHead, stage: DenseStage, params: TrainParams, X_all: torch.Tensor, y_all: torch.Tensor,
               best_epoch: int) -> int:
    """The MLP member trained again from a fresh start on ``X_all`` for the chosen number of epochs (the
    last epoch kept: there is no unseen validation row left to choose by). Returns the epochs run."""
    epochs = max(1, best_epoch)
    torch.manual_seed(params.seed)
    for module in [*head.mlp, head.skip]:
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    mlp_params = [p for m in [head.mlp, head.skip] if m is not None for p in m.parameters()]
    gen = torch.Generator().manual_seed(params.seed)
    MlpFit(head, X_all, y_all, stage.Xv, stage.yv, replace(params, epochs=epochs), gen, select=False).run(
        head.mlp_logits, mlp_params, params.lr, params.weight_decay, params.label_smoothing, None)
    return epochs
