"""`fastsae judge`: an LLM judge scores a sample of features (the paper's Section 5), from a features folder.

Which features: a seeded random sample of the live features whose five top contexts all fire. Per feature,
two questions to any OpenAI-compatible endpoint (interp/llm_client.py):
- explanation: the five top contexts, decoded with the store's tokenizer, firing tokens marked; the judge
  answers a short description and a 1-5 monosemanticity score on the paper's rubric (judge_prompts.py);
- detection (delphi's): the description and a shuffled mix of held-out activating and non-activating
  texts; the judge says which activate; accuracy and F1 per feature (judge_detect.py).
An answer that cannot be parsed is re-asked, then the feature (or those examples) is recorded unscored,
never guessed. Answers are cached in judge_cache/, so a rerun or a resume asks only what is missing
(an answer that could not be parsed counts as missing: a rerun asks it again).
After --max-failures failed requests in a row it stops, writes what was scored and raises EndpointError.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsae.interp.feature_artifact import FeatureArtifact
from fastsae.interp.judge_config import JudgeConfig
from fastsae.interp.judge_detect import (
    Example,
    JudgeInputError,
    detection_metrics,
    held_out,
    mix,
    negative_windows,
)
from fastsae.interp.judge_prompts import (
    context_text,
    detect_messages,
    detection_parser,
    explain_messages,
    parse_explanation,
    render,
)
from fastsae.interp.llm_client import EndpointError, LLMClient

log = logging.getLogger(__name__)

TOP_SHOWN = 5  # the paper shows the judge the five top contexts
CACHE_DIR = "judge_cache"


@dataclass
class Plan:
    """Everything one feature's questions need, built before anything is asked."""

    feature: int
    explain: list[dict]
    positives: list[str]
    negatives: list[str]


def eligible_features(art: FeatureArtifact) -> np.ndarray:
    """Live features whose TOP_SHOWN top contexts all have a non-zero activation."""
    top = art.tensors["top_act"]
    if top.shape[1] < TOP_SHOWN:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((art.tensors["dead"] == 0) & (top[:, :TOP_SHOWN] > 0).all(axis=1))


def select_features(art: FeatureArtifact, n: int, seed: int) -> list[int]:
    eligible = eligible_features(art)
    if len(eligible) == 0:
        live = len(art.live())
        raise JudgeInputError(
            f"{art.path}: no feature to judge: none of the {live} live features (of {art.d_sae}) has "
            f"{TOP_SHOWN} firing top contexts (top_k {art.tensors['top_act'].shape[1]})"
        )
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(eligible, size=min(n, len(eligible)), replace=False))


def load_tokenizer(art: FeatureArtifact):
    from fastsae.lm import load_store_tokenizer

    store = (art.meta.get("store") or {}).get("path")
    if not store or not Path(store).is_dir():
        raise JudgeInputError(
            f"{art.path / 'features.json'}: its store {store!r} is not a folder; the judge decodes tokens "
            "with the store's tokenizer"
        )
    return load_store_tokenizer(store)


def plan_features(art: FeatureArtifact, features: list[int], tokenizer, cfg: JudgeConfig) -> list[Plan]:
    shown = {f: art.contexts(f, "top")[:TOP_SHOWN] for f in features}
    negatives = negative_windows(art, features, cfg.detection, seed=cfg.seed)
    plans = []
    for f in features:
        texts = [context_text(tokenizer, c, marked=True) for c in shown[f]]
        positives = [
            context_text(tokenizer, c, marked=False) for c in held_out(art, f, shown[f], cfg.detection)
        ]
        neg = [render(tokenizer, ids) for ids in negatives[f]]
        plans.append(Plan(f, explain_messages(f, texts), positives, neg))
    return plans


def judge_feature(client: LLMClient, plan: Plan, cfg: JudgeConfig) -> dict:
    row = {"feature": plan.feature, "description": None, "score": None, "status": "unscored", "reason": None}
    row.update(detection=None, detection_accuracy=None, detection_f1=None, detection_n=0)
    reply = client.ask_parsed(plan.explain, parse_explanation, parse_retries=cfg.parse_retries)
    if not reply.ok:
        row["reason"] = reply.error
        return row
    description, score = reply.value
    row.update(description=description, score=score, status="scored")
    if cfg.detection == 0:
        return row
    if not plan.positives or not plan.negatives:
        row["detection"] = {"status": "unscored", "reason": "no held-out activating or non-activating texts"}
        return row
    examples: list[Example] = []
    predictions: list[int | None] = []
    errors = []
    for batch in mix(plan.positives, plan.negatives, seed=cfg.seed, feature=plan.feature):
        r = client.ask_parsed(
            detect_messages(description, [e.text for e in batch]),
            detection_parser(len(batch)),
            parse_retries=cfg.parse_retries,
        )
        examples += batch
        predictions += r.value if r.ok else [None] * len(batch)
        if not r.ok:
            errors.append(r.error)
    metrics = detection_metrics(examples, predictions)
    status = "scored" if metrics["n"] else "unscored"
    metrics.update(status=status, reason=errors[-1] if errors else None)
    row.update(
        detection=metrics,
        detection_accuracy=metrics["accuracy"],
        detection_f1=metrics["f1"],
        detection_n=metrics["n"],
    )
    return row


def not_asked(feature: int, why: str) -> dict:
    row = {"feature": feature, "description": None, "score": None, "status": "unscored", "reason": why}
    row.update(detection=None, detection_accuracy=None, detection_f1=None, detection_n=0)
    return row


def _progress(enabled: bool, total: int):
    from rich.progress import Progress

    bar = Progress(disable=not enabled, transient=True)
    return bar, bar.add_task("judge", total=total)


def run_judge(cfg: JudgeConfig, *, console=None) -> dict:
    """Judge, write judge.jsonl, judge_summary.json and judge_scores.png into the folder; the summary.
    Raises EndpointError (after writing) when the client gave up."""
    from fastsae.interp.judge_report import write_outputs

    art = FeatureArtifact.load(cfg.folder)
    features = select_features(art, cfg.features, cfg.seed)
    client = LLMClient(
        cfg.endpoint,
        cfg.model,
        api_key_env=cfg.api_key_env,
        concurrency=cfg.concurrency,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        cache_dir=art.path / CACHE_DIR,
        max_failures=cfg.max_failures,
    )  # before the slow part: a bad endpoint URL or a missing openai package is one line at once
    try:
        plans = plan_features(art, features, load_tokenizer(art), cfg)
    except BaseException:
        client.close()
        raise
    rows: dict[int, dict] = {}
    bar, task = _progress(cfg.progress, len(plans))
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="judge")
    try:
        with bar:
            futures = {pool.submit(judge_feature, client, p, cfg): p.feature for p in plans}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                bar.advance(task)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        client.close()
        why = f"not asked: {client.gave_up}" if client.gave_up else "not asked: the run was interrupted"
        done = [rows.get(p.feature) or not_asked(p.feature, why) for p in plans]
        summary = write_outputs(
            art, cfg, done, client.stats, client.gave_up, eligible=len(eligible_features(art))
        )
    if client.gave_up:
        scored = summary["counts"]["scored"]
        raise EndpointError(
            f"{client.gave_up}; kept {scored} scored features of {len(plans)} in {art.path / 'judge.jsonl'} "
            "(rerun to ask the rest)"
        )
    return summary
