"""The match verifier: decides whether a semantic candidate may answer a query.

A candidate is accepted when no guard fires (a number, a name, a negation or a
direction word differs) and a calibrated score -- a logistic model over the cosine
and cheap lexical evidence -- reaches the setting's threshold.  Thresholds come from
an operating curve measured by grouped cross-validation (threshold -> false-hit rate
and true-hit rate on held-out pairs), so a target false-hit rate maps to a threshold.

Calibrations are plain JSON (no pickle), keyed by embedder model id; unknown
embedders get a stricter generic calibration until :meth:`MatchVerifier.fit` is run
on the user's own labelled pairs.  Runtime needs numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._keys import canonicalize
from ._lexical import FEATURE_RANGES, FEATURES, GUARDS, features, guards, parse

__all__ = ["CALIBRATION_FILE", "GENERIC", "MARGIN", "MatchVerifier", "Setting", "Verdict"]

Setting = Literal["strict", "balanced"]
CALIBRATION_FILE = "verifier_calibration.json"
DATA_DIR = Path(__file__).resolve().parent / "data"
GENERIC = "*"
_FORMAT = 1
_TARGETS: dict[str, float] = {"strict": 0.01, "balanced": 0.05}
MARGIN = 0.85
_ALIASES = {
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "sentence-transformers/all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one candidate, with the evidence behind it."""

    match: bool
    score: float
    """Calibrated probability-like score in [0, 1]; 0 when a guard rejected."""
    evidence: dict[str, object] = field(default_factory=dict)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _cos_terms(cos: float, knots: Sequence[float]) -> list[float]:
    return [cos, *(max(0.0, cos - k) for k in knots)]


class MatchVerifier:
    """Verifies semantic candidates for one embedder model at one operating point.

    Build it with :meth:`for_model` (shipped calibration), :meth:`fit` (your pairs) or
    :meth:`load` (a saved calibration).
    """

    __slots__ = ("_bias", "_cal", "_curve", "_floor", "_guards", "_knots", "_lex_cols",
                 "_names", "_setting", "_threshold", "_weights", "_wlist")

    def __init__(self, calibration: Mapping[str, Any], *, setting: Setting = "strict",
                 target_false_hit_rate: float | None = None,
                 threshold: float | None = None) -> None:
        cal = dict(calibration)
        names = list(cal["features"])
        n_cos = 1 + len(cal["cos_knots"])
        expected = ["cos", *(f"cos>{k:g}" for k in cal["cos_knots"])]
        if names[:n_cos] != expected or not set(names[n_cos:]) <= set(FEATURES):
            raise ValueError(f"calibration features {names} are not known to this version")
        if len(cal["weights"]) != len(names):
            raise ValueError("calibration weights do not match its features")
        if setting not in _TARGETS:
            raise ValueError(f"setting must be 'strict' or 'balanced', not {setting!r}")
        self._cal = cal
        self._knots = tuple(float(k) for k in cal["cos_knots"])
        self._weights = np.asarray(cal["weights"], dtype=np.float64)
        self._wlist = [float(w) for w in cal["weights"]]
        self._names = tuple(names)
        self._lex_cols = tuple(FEATURES.index(n) for n in names[n_cos:])
        self._bias = float(cal["bias"])
        self._guards = tuple(g for g in cal["guards"] if g in GUARDS)
        c = cal["curve"]
        self._curve = (np.asarray(c["threshold"], dtype=np.float64),
                       np.asarray(c["fpr"], dtype=np.float64),
                       np.asarray(c["tpr"], dtype=np.float64))
        self._setting: Setting = setting
        if threshold is not None:
            t = float(threshold)
        elif target_false_hit_rate is not None:
            t = self.threshold_for(target_false_hit_rate)
        else:
            t = float(cal["settings"][setting]["threshold"])
        if not 0.0 <= t <= 1.0:
            raise ValueError("threshold must be within [0, 1]")
        self._threshold = t
        self._floor = self._compute_floor(t)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def for_model(cls, model_id: str, setting: Setting = "strict", *,
                  target_false_hit_rate: float | None = None,
                  threshold: float | None = None) -> MatchVerifier:
        """The shipped calibration of ``model_id``, or the generic one for unknown models."""
        return cls(shipped_calibration(model_id), setting=setting,
                   target_false_hit_rate=target_false_hit_rate, threshold=threshold)

    @classmethod
    def load(cls, path: str | Path, setting: Setting = "strict", **kw: Any) -> MatchVerifier:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a verifier calibration of format {_FORMAT}")
        return cls(data["calibration"], setting=setting, **kw)

    def save(self, path: str | Path) -> None:
        doc = {"format": _FORMAT, "calibration": self._cal}
        Path(path).write_text(json.dumps(doc, indent=1), encoding="utf-8")

    @classmethod
    def fit(cls, pairs: Iterable[Any], embedder: Callable[[list[str]], Any] | Any, *,
            folds: int = 5, model_id: str | None = None, setting: Setting = "strict",
            l2: float = 1.0, cos_knots: Sequence[float] | None = None,
            guard_names: Sequence[str] = GUARDS, seed: int = 0) -> MatchVerifier:
        """Calibrate on labelled pairs ``(cached, query, duplicate)`` (tuples or dicts).

        ``embedder`` is a callable ``list[str] -> array`` or has ``embed``; questions are
        canonicalised before embedding, as the cache does.  The operating curve is
        measured on held-out folds (pairs grouped so that no question is on both sides).
        """
        a_txt, b_txt, y = _read_pairs(pairs)
        if y.min() == y.max():
            raise ValueError("fit needs both duplicate and non-duplicate pairs")
        embed = getattr(embedder, "embed", embedder)
        uniq = sorted({canonicalize(t) for t in (*a_txt, *b_txt)})
        pos = {t: i for i, t in enumerate(uniq)}
        vec = np.asarray(embed(uniq), dtype=np.float32)
        vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        ia = np.array([pos[canonicalize(t)] for t in a_txt])
        ib = np.array([pos[canonicalize(t)] for t in b_txt])
        cos = np.einsum("ij,ij->i", vec[ia], vec[ib]).astype(np.float64)
        mid = model_id or str(getattr(embedder, "model_id", "custom"))
        cal = calibrate(a_txt, b_txt, y, cos, group=_groups(ia, ib), folds=folds, l2=l2,
                        cos_knots=cos_knots, guard_names=guard_names, seed=seed, model_id=mid)
        return cls(cal, setting=setting)

    # -- operating points -----------------------------------------------------------

    @property
    def model_id(self) -> str:
        return str(self._cal.get("model_id", ""))

    @property
    def setting(self) -> Setting:
        return self._setting

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def calibration(self) -> dict[str, Any]:
        """A copy of the calibration (plain JSON data)."""
        out: dict[str, Any] = json.loads(json.dumps(self._cal))
        return out

    @property
    def candidate_floor(self) -> float:
        """Cosine below which no candidate can reach the threshold, whatever its words:
        search may drop candidates under it without changing any decision."""
        return self._floor

    def threshold_for(self, target_false_hit_rate: float) -> float:
        """Lowest threshold whose cross-validated false-hit rate is at most ``MARGIN`` times
        the target (the margin keeps the rate on new pairs under the target: a threshold
        read off a finite curve is slightly optimistic)."""
        if not 0.0 < target_false_hit_rate < 1.0:
            raise ValueError("target_false_hit_rate must be in (0, 1)")
        thr, fpr, _ = self._curve
        ok = np.nonzero(fpr <= target_false_hit_rate * MARGIN)[0]
        # thr is descending and fpr ascending: the last admissible point is the loosest.
        return float(thr[ok[-1]]) if len(ok) else float(thr[0])

    def rates(self, threshold: float | None = None) -> tuple[float, float]:
        """(false-hit rate, true-hit rate) measured in cross-validation at a threshold."""
        t = self._threshold if threshold is None else threshold
        thr, fpr, tpr = self._curve
        i = np.nonzero(thr >= t)[0]
        return (float(fpr[i[-1]]), float(tpr[i[-1]])) if len(i) else (0.0, 0.0)

    def tighten(self, threshold: float | None = None, factor: float = 0.5) -> float:
        """A stricter threshold: the loosest one whose measured false-hit rate is at most
        ``factor`` times that of ``threshold`` (for a partition whose users reported a
        false hit).  Always strictly above ``threshold`` unless the curve's top is hit."""
        t = self._threshold if threshold is None else float(threshold)
        fpr_now, _ = self.rates(t)
        thr, fpr, _ = self._curve
        ok = np.nonzero((fpr <= fpr_now * factor) & (thr > t))[0]
        if len(ok):
            return float(thr[ok[-1]])
        higher = thr[thr > t]
        return float(higher.min()) if len(higher) else min(1.0, t + (1.0 - t) / 2)

    def with_threshold(self, threshold: float) -> MatchVerifier:
        return MatchVerifier(self._cal, setting=self._setting, threshold=threshold)

    # -- decisions ------------------------------------------------------------------

    def verify(self, query_text: str, cached_text: str, cosine: float) -> Verdict:
        """Decide whether the answer cached for ``cached_text`` may answer ``query_text``.

        Texts are the original questions (casing kept); ``cosine`` is the similarity of
        their embeddings by this verifier's model.
        """
        p, q = parse(query_text), parse(cached_text)
        fired = guards(p, q)
        c = float(cosine)
        lex = features(p, q, fired)
        x = [c, *(c - k if c > k else 0.0 for k in self._knots), *(lex[i] for i in self._lex_cols)]
        contrib = [w * v for w, v in zip(self._wlist, x, strict=True)]
        raw = _sigmoid(self._bias + sum(contrib))
        blocking = sorted(k for k in fired if k in self._guards)
        score = 0.0 if blocking else raw
        match = not blocking and score >= self._threshold and c >= self._floor
        evidence: dict[str, object] = {
            "cosine": c,
            "guards": fired,
            "blocked_by": blocking,
            "model_score": raw,
            "threshold": self._threshold,
            "contributions": dict(zip(self._names, contrib, strict=True)),
            "lexical": dict(zip(FEATURES, lex, strict=True)),
            "bias": self._bias,
        }
        return Verdict(match=bool(match), score=float(score), evidence=evidence)

    def score_many(self, query_texts: Sequence[str], cached_texts: Sequence[str],
                   cosines: Sequence[float] | np.ndarray) -> np.ndarray:
        """Decision scores (0 where a guard blocks) of many pairs at once."""
        return _scores(self._cal, query_texts, cached_texts, np.asarray(cosines, np.float64))

    def _compute_floor(self, t: float) -> float:
        # Best case of every bounded feature, then the smallest cosine still reaching t.
        lex_w = self._weights[1 + len(self._knots):]
        ranges = [FEATURE_RANGES[i] for i in self._lex_cols]
        best = sum(max(w * lo, w * hi) for w, (lo, hi) in zip(lex_w, ranges, strict=True))
        grid = np.linspace(-1.0, 1.0, 4001)
        z = self._bias + best + np.array(
            [float(np.dot(self._weights[: 1 + len(self._knots)], _cos_terms(c, self._knots)))
             for c in grid])
        logit_t = math.log(t / (1 - t)) if 0 < t < 1 else (-math.inf if t <= 0 else math.inf)
        reach = np.nonzero(z >= logit_t)[0]
        if not len(reach):
            return 1.0
        # The first grid point reaching t, one step lower for rounding safety; max with the
        # calibration's own minimum.
        return max(float(grid[max(reach[0] - 1, 0)]), float(self._cal.get("min_cosine", -1.0)))

    def __repr__(self) -> str:
        return (f"MatchVerifier(model_id={self.model_id!r}, setting={self._setting!r}, "
                f"threshold={self._threshold:.4f}, candidate_floor={self._floor:.3f})")


# -- calibration: numpy only ----------------------------------------------------------


@lru_cache(maxsize=1)
def _shipped_text() -> str:
    return (DATA_DIR / CALIBRATION_FILE).read_text(encoding="utf-8")


def shipped_calibration(model_id: str) -> dict[str, Any]:
    """The calibration shipped for ``model_id`` (a copy), else the generic one."""
    doc = json.loads(_shipped_text())
    models = doc["models"]
    key = _ALIASES.get(model_id.casefold(), model_id)
    if key in models:
        return dict(models[key])
    generic = dict(models[GENERIC])
    generic["model_id"] = model_id
    return generic


def _read_pairs(pairs: Iterable[Any]) -> tuple[list[str], list[str], np.ndarray]:
    a: list[str] = []
    b: list[str] = []
    y: list[int] = []
    for row in pairs:
        if isinstance(row, Mapping):
            a.append(str(row["cached"]))
            b.append(str(row["query"]))
            y.append(int(bool(row["duplicate"])))
        else:
            ca, qb, d = row
            a.append(str(ca))
            b.append(str(qb))
            y.append(int(bool(d)))
    if not y:
        raise ValueError("no pairs")
    return a, b, np.asarray(y, dtype=np.int8)


def _groups(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Connected component of each pair in the graph whose nodes are questions."""
    parent = np.arange(int(max(ia.max(), ib.max())) + 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for i, j in zip(ia.tolist(), ib.tolist(), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
    return np.array([find(i) for i in ia.tolist()])


def grouped_folds(group: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold of each pair; whole groups go to the currently smallest fold."""
    rng = np.random.default_rng(seed)
    ids, sizes = np.unique(group, return_counts=True)
    order = rng.permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(k)
    fold_of: dict[int, int] = {}
    for g in order.tolist():
        f = int(np.argmin(load))
        fold_of[int(ids[g])] = f
        load[f] += sizes[g]
    return np.array([fold_of[int(g)] for g in group.tolist()], dtype=np.int16)


def lexical_design(a_txt: Sequence[str], b_txt: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lexical feature matrix (n, len(FEATURES)) and guard firings (n, len(GUARDS)) of
    pairs (cached ``a_txt[i]``, query ``b_txt[i]``)."""
    L = np.empty((len(a_txt), len(FEATURES)))
    G = np.zeros((len(a_txt), len(GUARDS)), dtype=bool)
    for i, (ta, tb) in enumerate(zip(a_txt, b_txt, strict=True)):
        p, q = parse(tb), parse(ta)
        g = guards(p, q)
        L[i] = features(p, q, g)
        for j, name in enumerate(GUARDS):
            G[i, j] = name in g
    return L, G


def cos_design(cos: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    return np.column_stack([cos, *(np.maximum(0.0, cos - k) for k in knots)])


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0,
                 iters: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method on standardised columns;
    returns weights and bias on the raw columns."""
    mu = X.mean(0)
    sd = X.std(0)
    sd[sd < 1e-9] = 1.0
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    w = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0
    yf = y.astype(np.float64)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -35, 35)))
        grad = Z.T @ (p - yf) + reg * w
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg + 1e-9)
        step = np.linalg.solve(H, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    coef = w[:-1] / sd
    return coef, float(w[-1] - np.dot(coef, mu))


def operating_curve(score: np.ndarray, y: np.ndarray, points: int = 400) -> dict[str, list[float]]:
    """Threshold -> (FPR, TPR), thresholds descending, dense at low false-hit rates."""
    order = np.argsort(-score, kind="stable")
    s, yy = score[order], y[order].astype(bool)
    tp = np.cumsum(yy)
    fp = np.cumsum(~yy)
    # Only the last index of each run of equal scores is a valid cut.
    last = np.r_[s[1:] != s[:-1], True]
    s, tp, fp = s[last], tp[last], fp[last]
    keep = s > 0  # score 0 = blocked by a guard: never a match
    s, tp, fp = s[keep], tp[keep], fp[keep]
    npos, nneg = max(int(yy.sum()), 1), max(int((~yy).sum()), 1)
    fpr, tpr = fp / nneg, tp / npos
    if len(s) > points:
        targets = np.unique(np.r_[np.geomspace(1e-4, 1.0, points), fpr[: min(len(fpr), 50)]])
        idx = np.unique(np.clip(np.searchsorted(fpr, targets, side="right") - 1, 0, len(s) - 1))
        s, fpr, tpr = s[idx], fpr[idx], tpr[idx]
    return {"threshold": [round(float(v), 6) for v in s],
            "fpr": [round(float(v), 6) for v in fpr],
            "tpr": [round(float(v), 6) for v in tpr]}


def _tpr_at_fpr(score: np.ndarray, y: np.ndarray, fpr: float) -> float:
    neg = np.sort(score[y == 0])[::-1]
    k = int(np.floor(fpr * len(neg)))
    t = neg[k] if k < len(neg) else -np.inf
    return float((score[y == 1] > t).mean()) if (y == 1).any() else 0.0


def _decision(X: np.ndarray, G: np.ndarray, w: np.ndarray, b: float,
              guard_cols: np.ndarray) -> np.ndarray:
    s: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(X @ w + b, -35, 35)))
    s[G[:, guard_cols].any(1)] = 0.0
    return s


def calibrate(a_txt: Sequence[str], b_txt: Sequence[str], y: np.ndarray, cos: np.ndarray, *,
              group: np.ndarray, folds: int = 5, l2: float = 1.0,
              cos_knots: Sequence[float] | None = None, guard_names: Sequence[str] = GUARDS,
              seed: int = 0, model_id: str = "custom", fold: np.ndarray | None = None,
              lexical: tuple[np.ndarray, np.ndarray] | None = None,
              lexical_features: Sequence[str] | None = None,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit the score on all pairs and measure its operating curve out of fold.

    ``cos_knots`` (hinges of the piecewise-linear cosine term) default to the quartiles
    of the duplicates' cosines, so the score bends where strict thresholds lie."""
    y = np.asarray(y)
    cos = np.asarray(cos, np.float64)
    if cos_knots is None:
        cos_knots = [round(float(v), 3) for v in np.quantile(cos[y == 1], (0.25, 0.5, 0.75))]
    L, G = lexical_design(a_txt, b_txt) if lexical is None else lexical
    gcols = np.array([GUARDS.index(g) for g in guard_names], dtype=int)
    if fold is None:
        k = max(2, min(folds, len(np.unique(group))))
        fold = grouped_folds(group, k, seed)
    # The lexical features join the score only if they raise the out-of-fold true-hit
    # rate at the strict target; the guards act either way.
    best: tuple[float, list[str], np.ndarray] | None = None
    candidates = [list(FEATURES), []] if lexical_features is None else [list(lexical_features)]
    for feats in candidates:
        cols = [FEATURES.index(f) for f in feats]
        X = np.hstack([cos_design(cos, cos_knots), L[:, cols]])
        oof = np.zeros(len(y))
        for f in np.unique(fold):
            tr, te = fold != f, fold == f
            if y[tr].min() == y[tr].max():
                raise ValueError("a training fold has a single class: give more pairs")
            w, b = fit_logistic(X[tr], y[tr], l2)
            oof[te] = _decision(X[te], G[te], w, b, gcols)
        fpr_ok = _tpr_at_fpr(oof, y, _TARGETS["strict"])
        if best is None or fpr_ok > best[0] + 1e-9:
            best = (fpr_ok, feats, oof)
    assert best is not None
    _, feats, oof = best
    cols = [FEATURES.index(f) for f in feats]
    X = np.hstack([cos_design(cos, cos_knots), L[:, cols]])
    w, b = fit_logistic(X, y, l2)
    if not feats and (np.cumsum(w) >= 0).all():
        # A score that is a non-decreasing function of the cosine ranks pairs exactly as
        # the cosine does, so its curve is read off the final score directly (pooling
        # the folds' slightly different scores would only add noise).
        oof = _decision(X, G, w, b, gcols)
    curve = operating_curve(oof, y)
    cal: dict[str, Any] = {
        "model_id": model_id,
        "features": ["cos", *(f"cos>{k:g}" for k in cos_knots), *feats],
        "cos_knots": [float(k) for k in cos_knots],
        "weights": [round(float(v), 6) for v in w],
        "bias": round(b, 6),
        "guards": list(guard_names),
        "curve": curve,
        "pairs": {"n": len(y), "duplicates": int(y.sum()), "folds": len(np.unique(fold))},
    }
    tmp = MatchVerifier({**cal, "settings": {s: {"threshold": 1.0} for s in _TARGETS}})
    cal["settings"] = {}
    for name, target in _TARGETS.items():
        t = tmp.threshold_for(target)
        fpr, tpr = tmp.rates(t)
        cal["settings"][name] = {"target_fpr": target, "threshold": t, "cv_fpr": fpr,
                                 "cv_tpr": tpr}
    if extra:
        cal.update(extra)
    return cal


def feature_matrix(cal: Mapping[str, Any], cos: np.ndarray, L: np.ndarray) -> np.ndarray:
    """The score's inputs for a calibration, from cosines and a ``lexical_design`` matrix."""
    n_cos = 1 + len(cal["cos_knots"])
    cols = [FEATURES.index(f) for f in cal["features"][n_cos:]]
    return np.hstack([cos_design(cos, cal["cos_knots"]), L[:, cols]])


def _scores(cal: Mapping[str, Any], q_txt: Sequence[str], c_txt: Sequence[str],
            cos: np.ndarray) -> np.ndarray:
    L, G = lexical_design(c_txt, q_txt)
    gcols = np.array([GUARDS.index(g) for g in cal["guards"]], dtype=int)
    return _decision(feature_matrix(cal, cos, L), G, np.asarray(cal["weights"]),
                     float(cal["bias"]), gcols)
