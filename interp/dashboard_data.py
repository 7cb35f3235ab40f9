"""What the dashboard page embeds: one compact JSON document built from a features folder.

Layout (the page's script reads it; tests read it back too):
- `meta`: what was read (SAE, store, counts, window, histogram edges, token-type names, judge summary);
- `vocab`: the decoded text of every token id the contexts use, most frequent first; `vocab_ids` its ids;
- `features`: the table, one column per field (`id`, `density`, `max`, `mean`, `dead`, `mass` per token
  type, `top_tokens`: the vocab indices of its top contexts' activating tokens, most frequent first, and
  the judge's `desc`, `score`, `status`, `why` (its reason when unscored), `det_acc`, `det_f1`, null
  where unjudged);
- `detail`: per feature `[hist, top, quantile, logits]`, four strings decoded only when the feature is opened:
  `hist` the index of its first non-empty bin then the counts up to its last one, comma-separated;
  `top`/`quantile` contexts separated by `/`, each `seq,pos;types;tokens;acts` over the window's 2W+1
  slots: `types` one base-36 digit per slot, `tokens` each slot's vocab index in `meta.tok_width` digits
  of base 64 (ALPHABET), both `.` for a slot outside the sequence (the activating token is slot W), and
  `acts` the slots' non-zero activations as `slot:value` (3 significant digits); `logits` the logit view,
  `pos/neg`, each a comma-separated list of `vocab index:value` (3 significant digits), the promoted
  tokens strongest first and the suppressed ones most negative first; "" when the features run has no
  logit view (`meta.logits` null: --no-logits, or an artifact of version 1);
- `special`: special_tokens.json, or null.

The page holds `detail` apart from the rest (detail_blob): gzip-compressed JSON in base64, which the
page inflates with the browser's own DecompressionStream once loaded; it is most of the data and
compresses about fivefold.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from pathlib import Path

import numpy as np

from fastsae.errors import InputError
from fastsae.interp.feature_artifact import CONTEXT_KINDS, LOGIT_TENSORS, OUTSIDE_TYPE, FeatureArtifact

JUDGE_FILE = "judge.jsonl"
JUDGE_SUMMARY = "judge_summary.json"
DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+-"  # no separator, quote or <


class DashboardInputError(InputError):
    """A features folder the dashboard cannot render (the message says what and where)."""


def sig(x: float, digits: int = 4) -> float | None:
    """x rounded to `digits` significant digits (JSON stays short); None for NaN/inf."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def load_judge(feats: Path) -> dict[int, dict]:
    """judge.jsonl beside the artifact, by feature id ({} when the features were not judged)."""
    path = feats / JUDGE_FILE
    if not path.is_file():
        return {}
    out: dict[int, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[int(rec["feature"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DashboardInputError(f"{path}:{n}: not a judge record ({e})") from e
    return out


def _judge_fields(rec: dict | None) -> dict:
    """The judge's description, score and detection figures, whatever nesting judge.jsonl uses."""
    if rec is None:
        return {"desc": None, "score": None, "status": None, "why": None, "det_acc": None, "det_f1": None}
    det = rec.get("detection") if isinstance(rec.get("detection"), dict) else {}

    def num(*names):
        for src in (rec, det):
            for name in names:
                if isinstance(src.get(name), (int, float)) and not isinstance(src.get(name), bool):
                    return sig(src[name], 3)
        return None

    return {
        "desc": rec.get("description"),
        "score": num("score"),
        "status": rec.get("status"),
        "why": rec.get("reason"),
        "det_acc": num("detection_accuracy", "accuracy", "det_accuracy"),
        "det_f1": num("detection_f1", "f1", "det_f1"),
    }


def choose_features(art: FeatureArtifact, judged: dict[int, dict], max_features: int | None) -> np.ndarray:
    """Every feature; with a cap, the judged ones first, then the live ones by id, then the dead; sorted."""
    F = art.d_sae
    if max_features is None or max_features >= F:
        return np.arange(F)
    live = set(art.live().tolist())
    ranked = [f for f in sorted(judged) if 0 <= f < F]
    seen = set(ranked)
    ranked += [f for f in sorted(live) if f not in seen]
    seen |= live
    ranked += [f for f in range(F) if f not in seen]
    return np.array(sorted(ranked[:max_features]), dtype=np.int64)


def _vocab(art: FeatureArtifact, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vocab ids most frequent first, the sorted unique ids, each unique id's vocab index): the ids of the
    contexts and of the logit view."""
    names = [f"{p}_ids" for p in CONTEXT_KINDS.values()]
    names += [n for n in LOGIT_TENSORS if n.endswith("_ids")] if art.has_logits else []
    ids = np.concatenate([art.tensors[n][feats].ravel().astype(np.int64) for n in names])
    uniq, counts = np.unique(ids[ids >= 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    return uniq[order], uniq, rank


def token_width(n_vocab: int) -> int:
    """Base-64 digits per vocab index: the fewest that hold every index."""
    width = 1
    while 64**width < n_vocab:
        width += 1
    return width


def _ascii(alphabet: str) -> np.ndarray:
    return np.frombuffer(alphabet.encode(), np.uint8)


def _slots(types: np.ndarray, vocab: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """ASCII of every window slot's type digit [..., C] and token digits [..., C*width]; `.` outside."""
    outside = types == OUTSIDE_TYPE
    t = np.where(outside, ord("."), _ascii(DIGITS36)[np.where(outside, 0, types)]).astype(np.uint8)
    digits = (np.maximum(vocab, 0)[..., None] // (64 ** np.arange(width - 1, -1, -1))) % 64
    k = np.where(outside[..., None], ord("."), _ascii(ALPHABET)[digits]).astype(np.uint8)
    return t, k.reshape(*k.shape[:-2], -1)


def _encode_kind(t: dict[str, np.ndarray], width: int) -> list[str]:
    """Every feature's contexts of one kind in the page's encoding (module doc), one string per feature.
    Built from whole-array numpy passes and string slices: a per-context numpy call costs more than the
    context's text."""
    F, K, C = t["types"].shape
    type_chars, tok_chars = _slots(t["types"], t["vocab"], width)
    types_text, toks_text = type_chars.tobytes().decode(), tok_chars.tobytes().decode()
    f_nz, j_nz, k_nz = np.nonzero(t["acts"])
    values = t["acts"][f_nz, j_nz, k_nz]
    pairs = (("%d:%.3g\x00" * len(k_nz)) % tuple(np.stack([k_nz, values], 1).ravel().tolist())).split("\x00")
    bounds = np.searchsorted(
        f_nz * K + j_nz, np.arange(F * K + 1)
    ).tolist()  # pairs of context c: bounds[c:c+2]
    seqs, pos = t["seq"].tolist(), t["pos"].tolist()
    out = []
    for f in range(F):
        parts = []
        for j in range(K):
            if seqs[f][j] < 0:
                continue
            c = f * K + j
            parts.append(
                f"{seqs[f][j]},{pos[f][j]};{types_text[c * C : (c + 1) * C]};"
                f"{toks_text[c * C * width : (c + 1) * C * width]};"
                + ",".join(pairs[bounds[c] : bounds[c + 1]])
            )
        out.append("/".join(parts))
    return out


def _encode_logits(art: FeatureArtifact, feats: np.ndarray, uniq, rank) -> list[str]:
    """Every feature's logit view in the page's encoding (module doc); "" each without one."""
    if not art.has_logits:
        return [""] * len(feats)
    sides = []
    for side in ("pos", "neg"):
        ids, vals = art.tensors[f"logit_{side}_ids"][feats], art.tensors[f"logit_{side}"][feats]
        F, L = ids.shape
        v = rank[np.searchsorted(uniq, ids)]
        flat = np.stack([v.ravel(), vals.ravel().astype(np.float64)], 1).ravel().tolist()
        pairs = (("%d:%.3g," * (F * L)) % tuple(flat)).split(",")
        sides.append([",".join(pairs[f * L : (f + 1) * L]) for f in range(F)])
    return [f"{p}/{n}" for p, n in zip(*sides, strict=True)]


def _hist(counts: np.ndarray) -> str:
    nz = np.flatnonzero(counts)
    return ",".join(map(str, [int(nz[0]), *counts[nz[0] : nz[-1] + 1].tolist()])) if len(nz) else ""


def _top_tokens(art: FeatureArtifact, feats: np.ndarray, uniq, rank, n: int = 5) -> list[list[int]]:
    """Per feature, the distinct activating tokens of its top contexts (vocab indices), most frequent first."""
    centers = art.tensors["top_ids"][feats][:, :, art.window]
    out = []
    for row in centers:
        row = row[row >= 0]
        if not len(row):
            out.append([])
            continue
        vals, first, counts = np.unique(row, return_index=True, return_counts=True)
        order = np.lexsort((first, -counts))[:n]
        out.append(rank[np.searchsorted(uniq, vals[order])].tolist())
    return out


def build_data(art: FeatureArtifact, decode, judged: dict[int, dict], max_features: int | None) -> dict:
    """The page's JSON document (module doc); `decode(id) -> str` is the store's tokenizer."""
    T = art.tensors
    n_types = T["type_mass"].shape[1]
    if n_types > len(DIGITS36):
        raise DashboardInputError(f"{art.path}: {n_types} token types; the page encodes at most 36")
    feats = choose_features(art, judged, max_features)
    vocab_ids, uniq, rank = _vocab(art, feats)
    width = token_width(len(vocab_ids))
    encoded = {}
    for kind, p in CONTEXT_KINDS.items():
        t = {name: T[f"{p}_{name}"][feats] for name in ("seq", "pos", "types", "acts", "ids")}
        t["vocab"] = (
            rank[np.searchsorted(uniq, t["ids"]).clip(0, max(0, len(uniq) - 1))] if len(uniq) else t["ids"]
        )
        encoded[kind] = _encode_kind(t, width)
    logits = _encode_logits(art, feats, uniq, rank)
    detail = [
        [_hist(T["hist_counts"][f]), encoded["top"][r], encoded["quantile"][r], logits[r]]
        for r, f in enumerate(feats.tolist())
    ]
    judge = [_judge_fields(judged.get(f)) for f in feats.tolist()]
    features = {
        "id": feats.tolist(),
        "density": [sig(x) for x in T["density"][feats]],
        "max": [sig(x) for x in T["max_act"][feats]],
        "mean": [sig(x) for x in T["mean_act"][feats]],
        "dead": [int(x) for x in T["dead"][feats]],
        "mass": np.round(T["type_mass"][feats], 3).tolist(),
        "top_tokens": _top_tokens(art, feats, uniq, rank),
        **{k: [j[k] for j in judge] for k in ("desc", "score", "status", "why", "det_acc", "det_f1")},
    }
    summary_path = art.path / JUDGE_SUMMARY
    meta = art.meta
    return {
        "meta": {
            "sae": meta.get("sae", {}),
            "store": meta.get("store", {}),
            "config": meta.get("config", {}),
            "n_sequences": meta.get("n_sequences"),
            "n_tokens": meta.get("n_tokens"),
            "window": art.window,
            "tok_width": width,
            "top_k": meta.get("top_k"),
            "n_quantile": meta.get("n_quantile"),
            "hist_edges": [sig(x) for x in meta.get("hist_edges", [])],
            "logits": (meta.get("logits") or {}) if art.has_logits else None,
            "token_types": {str(k): v for k, v in sorted(art.token_type_names.items())},
            "d_sae": art.d_sae,
            "n_dead": int(T["dead"].sum()),
            "n_shown": len(feats),
            "n_judged": sum(1 for f in feats.tolist() if f in judged),
            "judge_summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
        },
        "vocab": [decode(int(i)) for i in vocab_ids.tolist()],
        "vocab_ids": vocab_ids.tolist(),
        "features": features,
        "detail": detail,
        "special": art.special_table(),
    }


def script_json(doc: dict) -> str:
    """The document as compact JSON that is safe inside <script type="application/json">: every `<` is
    escaped (only strings hold one), so no token text can close the script element."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def detail_blob(detail: list) -> str:
    """The `detail` list as base64 of gzip-compressed JSON (deterministic: no timestamp in the header)."""
    raw = json.dumps(detail, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def read_detail_blob(text: str) -> list:
    """detail_blob, read back."""
    return json.loads(gzip.decompress(base64.b64decode(text)))
