"""SimPropNet's exact prototype-share attribution: the "prototype-share" explainer.

Derivation
----------
SimPropNet's foreground similarity of a query position q is cos(f_q, Z_f), where the foreground
prototype is the shot-averaged masked mean of the support features::

    Z_f = (1/K) sum_k  sum_s m_ks f_ks / (sum_s m_ks + eps)  =  sum_{k,s} w_ks f_ks,
    w_ks = m_ks / (K (sum_s' m_ks' + eps)),

with m_k the support mask resized (bilinearly, align_corners=True) to the feature grid. The dot
product is linear in the prototype, so it decomposes exactly over the support positions::

    <f_q, Z_f> = sum_{k,s} w_ks <f_q, f_ks>.

The cosine is not linear in Z_f; its normaliser 1 / (|f_q| |Z_f|) is a fixed number for a
given query position and episode, so we attribute the numerator and scale it by that fixed
factor (the norms are clamped at 1e-8 exactly as in the model)::

    cos(f_q, Z_f) = sum_{k,s} w_ks <f_q, f_ks> / (|f_q| |Z_f|).

The region R (query pixels, resized to the feature grid with the same bilinear resize, giving
weights r_q) has mean similarity  T = sum_q r_q cos(f_q, Z_f) / sum_q r_q, and support position
(k, s) gets the share

    a_ks = w_ks g_ks,   g_ks = sum_q r_q <f_q, f_ks> / (|f_q| |Z_f|) / sum_q r_q,

so that sum_{k,s} a_ks = T exactly. Because the mask resize D is linear, the share passes
exactly to the support *pixels* p of the input-size mask M_k:  w_ks = (D M_k)_s / n_k with
n_k = K (sum_s (D M_k)_s + eps), hence

    a_kp = M_kp (D^T g_k)_p / n_k,     sum_p a_kp = sum_s a_ks,

where D^T (the adjoint of the resize) is applied with autograd. The maps returned are these
per-pixel shares ``[K, S, S]``; they sum to the region's mean cosine similarity (reported in
``params['total']``). Pixels outside the support mask get exactly 0. Shares are non-negative
when the features are (SimPropNet's adapter ends with a ReLU), but no sign is forced.

``Attribution.params`` holds ``total`` (the region's mean cosine, = the maps' sum) and
``cell_shares`` (the ``[K, h, w]`` feature-cell shares as nested lists of floats, so that the
parameters stay JSON-serialisable for ``fssgui explain``'s ``explanation.json``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ExplainError
from ..models.base import resize_masks
from ..models.simpropnet import COS_EPS, MAP_EPS
from ..errors import check_cancelled
from .base import Attribution, Explainer


def prototype_shares(query_features: Tensor, support_features: Tensor, support_masks: Tensor,
                     region: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pixel shares of the region's mean foreground cosine.

    ``query_features [C, h, w]``, ``support_features [K, C, h, w]``, ``support_masks [K, S, S]``
    (input-size {0,1} masks), ``region [S', S']`` bool (query pixels). Returns
    (``maps [K, S, S]``, ``cell_shares [K, h, w]``, ``total``) with ``maps.sum() == total ==
    cell_shares.sum()`` up to float rounding.
    """
    k, c, h, w = support_features.shape
    f_q = query_features.double()
    f_s = support_features.double()
    masks = support_masks.double()
    r = resize_masks(region.double()[None], (h, w))[0].double()  # [h, w] soft region weights
    if float(r.sum()) <= 0:
        raise ExplainError("the region is empty: brush some query pixels to explain")
    small = resize_masks(masks, (h, w)).double()  # [K, h, w] = D M
    n_k = k * (small.sum((1, 2)) + MAP_EPS)  # [K]
    weights = small / n_k[:, None, None]  # w_ks
    z_f = torch.einsum("khw,kchw->c", weights, f_s)
    z_norm = z_f.norm().clamp_min(COS_EPS)
    q_norm = f_q.norm(dim=0).clamp_min(COS_EPS)  # [h, w]
    coef = r / (q_norm * z_norm) / r.sum()  # region weight / fixed normaliser, per query position
    q_weighted = torch.einsum("hw,chw->c", coef, f_q)  # sum_q coef_q f_q
    g = torch.einsum("c,kchw->khw", q_weighted, f_s)  # g_ks
    cell_shares = weights * g
    total = (torch.einsum("chw,c->hw", f_q, z_f) / (q_norm * z_norm) * r).sum() / r.sum()
    # pixel level: a_kp = M_kp (D^T g_k)_p / n_k, with D^T from autograd of the (linear) resize
    probe = torch.zeros_like(masks, requires_grad=True)
    with torch.enable_grad():
        resized = resize_masks(probe, (h, w))
        (adjoint,) = torch.autograd.grad((resized * g).sum(), probe)
    maps = masks * adjoint / n_k[:, None, None]
    return maps.float(), cell_shares.float(), total.float()


class PrototypeShareExplainer(Explainer):
    """Exact decomposition of SimPropNet's query-prototype similarity over support pixels.

    Works with any model whose ``predict`` puts ``prototype_terms`` (query/support features at
    the matching layer) in ``Prediction.extras``; see the module docstring for the derivation.
    """

    name = "prototype-share"
    signed = False
    needs_matching = False

    def explain(self, model, batch, region: Tensor, *, prediction=None, progress=None, cancelled=None) -> Attribution:
        if batch.batch_size != 1:
            raise ExplainError("prototype-share explains one episode at a time (batch size 1)")
        check_cancelled(cancelled)
        if prediction is None or "prototype_terms" not in prediction.extras:
            if not hasattr(model, "prototype_terms"):
                raise ExplainError(f"{type(model).__name__} does not match against prototypes: "
                                   "prototype-share does not apply")
            with torch.no_grad():
                terms = model.prototype_terms(batch)
        else:
            terms = prediction.extras["prototype_terms"]
        maps, cells, total = prototype_shares(
            terms.query_features[0].detach(), terms.support_features[0].detach(),
            batch.support_masks[0].detach().to(terms.support_features.device), region.to(terms.query_features.device),
        )
        if progress is not None:
            progress(1.0)
        return Attribution(
            maps=maps.cpu(),
            method=self.name,
            params={"total": float(total), "cell_shares": cells.cpu().tolist(),
                    "meaning": "share of the region's mean foreground cosine similarity"},
            signed=False,
        )
