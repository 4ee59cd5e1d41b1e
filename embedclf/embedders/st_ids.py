"""A sentence-transformers model run from token ids (the ``st`` embedder's fast path).

A worker counts every text's tokens when it receives it. With a fast tokenizer the ``st`` embedder
counts with the tokenizer's Rust core and keeps the ids (:class:`~embedclf.embedders.base.TokenMemo`),
and its ``embed_batch`` builds the model's inputs from them and calls the model's modules itself:
the text is tokenized once, on the receive thread, and sentence-transformers' per-call Python
(tokenizing the batch again, splitting the output into one tensor per text) leaves the batch thread.
On a GPU, where that Python and not the model is what a worker waits for, this is the batch
thread's time (measured on an H200 in docs/benchmarks.md, "On a GPU").

Used only where it gives the model's own vectors: :meth:`IdsPath.build` embeds a few probe texts
both ways when the model loads and returns None (the embedder then keeps ``model.encode``) unless
they agree, so an unusual model (a prompt by default, other inputs, another truncation) or another
sentence-transformers version can only lose the speed, never change a vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: the inputs this path builds; a model whose preprocessing yields other tensors keeps ``encode``
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PROBE = ("card", "My card was declined at the shop!", "naïve café, 東京 🚀", "a", "word " * 400)
TOLERANCE = 1e-4


class IdsPath:
    def __init__(self, model: Any, batch_size: int, extras: dict, pad_id: int, type_ids: bool) -> None:
        self.model, self.batch_size, self.extras = model, batch_size, extras
        self.pad_id, self.type_ids = pad_id, type_ids
        self.dim = 0

    @classmethod
    def build(cls, model: Any, batch_size: int, normalize: bool) -> IdsPath | None:
        """The fast path for ``model``, or None where it does not give ``model.encode``'s vectors."""
        tok = getattr(model, "tokenizer", None)
        pad_id = getattr(tok, "pad_token_id", None)
        if getattr(tok, "backend_tokenizer", None) is None or pad_id is None:
            return None
        if getattr(model, "default_prompt_name", None) or not getattr(model, "max_seq_length", None):
            return None
        try:
            prepare = getattr(model, "preprocess", None) or model.tokenize
            template = prepare(["x"])
        except Exception:  # noqa: BLE001 - an unusual model keeps encode()
            return None
        tensors = {k for k, v in template.items() if hasattr(v, "shape")}
        if not tensors <= set(INPUTS) or not {"input_ids", "attention_mask"} <= tensors:
            return None
        extras = {k: v for k, v in template.items() if k not in tensors}
        model.eval()  # what encode() does before each call: no dropout
        path = cls(model, batch_size, extras, int(pad_id), "token_type_ids" in tensors)
        try:
            rust = path.tokenizer()
            mine = path.embed([e.ids for e in rust.encode_batch(list(PROBE))], normalize)
            theirs = model.encode(list(PROBE), batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=normalize, show_progress_bar=False)
        except Exception:  # noqa: BLE001
            return None
        if mine.shape != theirs.shape or not np.allclose(mine, theirs, atol=TOLERANCE, rtol=0):
            return None
        path.dim = mine.shape[1]
        return path

    def tokenizer(self) -> Any:
        """A private copy of the model's Rust tokenizer (one per thread), truncating as the model does."""
        from tokenizers import Tokenizer

        tok = self.model.tokenizer
        rust = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        side = getattr(tok, "truncation_side", "right")
        rust.enable_truncation(int(self.model.max_seq_length), direction="left" if side == "left" else "right")
        rust.no_padding()
        return rust

    def embed(self, seqs: Sequence[Sequence[int]], normalize: bool) -> np.ndarray:
        """Vectors of texts given as ids, in order; longest first, in runs of ``batch_size`` (as ``encode``)."""
        import torch

        if not seqs:
            return np.zeros((0, self.dim), dtype=np.float32)
        device = self.model.device
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        rows: list[tuple[list[int], Any]] = []
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(1, len(seqs[idx[0]]))
                ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    ids[row, : len(seqs[i])] = seqs[i]
                    mask[row, : len(seqs[i])] = 1
                features = dict(self.extras)
                features["input_ids"] = torch.from_numpy(ids).to(device)
                features["attention_mask"] = torch.from_numpy(mask).to(device)
                if self.type_ids:
                    features["token_type_ids"] = torch.zeros_like(features["input_ids"])
                emb = self.model(features)["sentence_embedding"]
                if normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                rows.append((idx, emb.float().cpu().numpy()))
        result = np.empty((len(seqs), rows[0][1].shape[1]), dtype=np.float32)
        for idx, vecs in rows:
            result[idx] = vecs
        return result
