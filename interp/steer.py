"""`fastsae steer`'s run: check every input, generate prompts × α with the SAE's features steering, measure.

Checks before any generation: the --feature and --alpha spellings, the SAE folder and its layer, feature
ids against d_sae, `top:` against the features artifact (and that the artifact is this SAE's), the model
(by default the one the SAE's store was harvested with; its fingerprint against the store's) against the
SAE's d_in and layer, the special tokens against the tokenizer, the prompts (none left is an error).

Then: one batched generation of every row (interp/steer_generate.py, steering by interp/steer_hook.py),
the responses' perplexity under the unsteered model, the measures, the judge if asked, the summary.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from fastsae.errors import InputError, UsageError
from fastsae.interp.steer_config import (
    SteerConfig,
    default_alphas,
    parse_alphas,
    parse_features,
    parse_positions,
)
from fastsae.interp.steer_generate import (
    Decoding,
    Prompt,
    Row,
    batches_of,
    conversation_prompt,
    generate,
    prompt_tokens,
    response_nll,
)
from fastsae.interp.steer_hook import Steering
from fastsae.interp.steer_measures import distinct_share, main_script, perplexity, script_switch, summarize
from fastsae.interp.targets import load_store_model, read_target

logger = logging.getLogger(__name__)


class SteerInputError(UsageError):
    """An SAE, feature, model or prompt file that cannot be steered with (the message names which)."""


class NoPromptsError(InputError):
    """Prompt files that hold no usable prompt."""


def default_prompts() -> Path:
    return Path(str(resources.files("fastsae.interp") / "data" / "prompts.jsonl"))


@dataclass
class Target:
    """The SAE and the features it steers with."""

    path: Path
    info: object  # saes.SAEInfo
    layer: int
    store_meta: dict | None  # the store's store.json, when the store is still there
    features: list[int]
    coefs: list[float]
    origins: list[str]  # how each feature was chosen (the --feature item, and the table's value for top:)
    sae: object = None
    table: dict | None = None  # --features-from's special-token table, when a top: item reads it


def open_target(cfg: SteerConfig) -> Target:

    specs = parse_features(cfg.feature)
    sae_target = read_target(cfg.sae, error=SteerInputError)
    info, layer = sae_target.info, sae_target.layer
    d_sae = info.spec.d_sae
    for s in specs:
        if s.index is not None and s.index >= d_sae:
            raise SteerInputError(f"--feature {s.text}: feature {s.index} is not in the SAE (d_sae {d_sae})")
    if any(s.token is not None for s in specs) and not cfg.features_from:
        raise SteerInputError(
            f"--feature {cfg.feature}: top:<token> reads a features artifact; give --features-from "
            "(the folder `fastsae features` wrote for this SAE)"
        )
    store = info.extra.get("store") if isinstance(info.extra.get("store"), dict) else {}
    meta = None
    if store.get("path") and Path(store["path"]).is_dir():
        from fastsae.store.format import read_store_json

        try:
            meta = read_store_json(Path(store["path"]))
        except (OSError, ValueError) as e:
            logger.warning(f"--sae {cfg.sae}: its store {store['path']} is unreadable ({e}); not checked")
    target = Target(Path(cfg.sae), info, layer, meta, [], [], [])
    if any(s.token is not None for s in specs):
        target.table = _special_table(cfg, target)
    return target


def resolve_features(cfg: SteerConfig, target: Target, tokenizer) -> None:
    """Feature ids and coefficients of --feature; `top:` through the artifact's special-token table."""
    specs = parse_features(cfg.feature)
    table = target.table
    for s in specs:
        origin = s.text
        if s.token is not None:
            _check_token(tokenizer, s.token, s.text)
            entry = next((t for t in table["tokens"] if t.get("token") == s.token), None)
            if entry is None:
                have = ", ".join(str(t.get("token")) for t in table["tokens"])
                raise SteerInputError(
                    f"--feature {s.text}: {s.token!r} is not in {cfg.features_from}'s special-token table "
                    f"(it has {have})"
                )
            top = entry.get("top") or []
            if len(top) < s.rank:
                raise SteerInputError(
                    f"--feature {s.text}: the table lists {len(top)} features for {s.token!r}, not {s.rank}"
                )
            index = int(top[s.rank - 1]["feature"])
            origin = f"{s.text} (mean max activation {float(top[s.rank - 1]['value']):.3g} at {s.token})"
            logger.info(f"feature {index}: {origin}")
        else:
            index = s.index
        target.features.append(index)
        target.coefs.append(1.0 if s.coef is None else s.coef)
        target.origins.append(origin)


def _special_table(cfg: SteerConfig, target: Target) -> dict:
    from fastsae.interp.feature_artifact import FeatureArtifact

    art = FeatureArtifact.load(cfg.features_from)
    if art.d_sae != target.info.spec.d_sae:
        raise SteerInputError(
            f"--features-from {cfg.features_from}: its SAE has d_sae {art.d_sae}, --sae {cfg.sae} has "
            f"{target.info.spec.d_sae}: not this SAE's features"
        )
    recorded = (art.meta.get("sae") or {}).get("path")
    if recorded and Path(recorded).resolve() != Path(cfg.sae).resolve():
        logger.warning(f"--features-from {cfg.features_from} was made from the SAE {recorded}, not {cfg.sae}")
    table = art.special_table()
    if not table or not table.get("tokens"):
        raise SteerInputError(
            f"--features-from {cfg.features_from}: no special-token table (special_tokens.json) in it"
        )
    return table


def _check_token(tokenizer, token: str, item: str) -> None:
    if token in tokenizer.get_vocab():
        return
    if len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1:
        return  # a role word that is one token (its vocabulary spelling may carry a byte-level prefix)
    raise SteerInputError(f"--feature {item}: the model's tokenizer has no token {token!r}")


def load_steer_model(cfg: SteerConfig, target: Target):
    from fastsae.lm import pick_device

    device = pick_device(cfg.device)
    store = target.info.extra.get("store") if isinstance(target.info.extra.get("store"), dict) else {}
    meta = target.store_meta or {}
    spec = cfg.model or (meta.get("model") or {}).get("name") or store.get("model") or target.info.model_name
    if not spec:
        raise SteerInputError(f"--sae {cfg.sae} records no model to steer; give --model")
    loaded = load_store_model(
        spec, meta, override=bool(cfg.model), device=device, progress=cfg.progress, error=SteerInputError,
        what="the SAE's store",
    )  # fmt: skip
    d_in = target.info.spec.d_in
    if d_in != loaded.d_model:
        raise SteerInputError(
            f"--sae {cfg.sae}: d_in {d_in} does not fit model {spec}'s d_model {loaded.d_model}"
        )
    if target.layer >= loaded.num_layers:
        raise SteerInputError(
            f"--sae {cfg.sae}: layer {target.layer} is not in model {spec} (layers 0..{loaded.num_layers - 1})"
        )
    return loaded, device


def read_prompts(cfg: SteerConfig) -> tuple[list[tuple[tuple[dict, ...], str]], dict]:
    """(messages up to the last user turn, source) of every usable conversation of --prompts (or the shipped
    questions), at most --limit; read before the model loads, so a bad file costs nothing."""
    from fastsae.chats.conversations import read_conversations

    specs = list(cfg.prompts) or [str(default_prompts())]
    out, skipped = [], {"no_user_turn": 0, "template_rejected": 0}
    for conv in read_conversations(specs, flag="--prompts"):
        if cfg.limit is not None and len(out) >= cfg.limit:
            break
        messages = conversation_prompt(conv.messages)
        if messages is None or not messages[-1]["content"].strip():
            skipped["no_user_turn"] += 1
            continue
        out.append((messages, conv.source))
    if not out:
        raise NoPromptsError(
            f"--prompts {', '.join(specs)}: no usable prompt after parsing ({_counts(skipped)})"
        )
    return out, skipped


def _counts(skipped: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in skipped.items() if n) or "nothing read"


def tokenize_prompts(cfg: SteerConfig, read, tokenizer) -> list[Prompt]:
    from fastsae.lm import TemplateRejectedError, check_chat_template

    check_chat_template(tokenizer)
    (conversations, skipped), prompts = read, []
    for messages, source in conversations:
        try:
            prompts.append(Prompt(messages, source, *prompt_tokens(tokenizer, messages)))
        except TemplateRejectedError:
            skipped["template_rejected"] += 1
    if not prompts:
        raise NoPromptsError(f"--prompts: the chat template rejects every prompt ({_counts(skipped)})")
    if any(skipped.values()):
        logger.info(f"prompts: {len(prompts)} used; skipped {_counts(skipped)}")
    return prompts


def build_rows(cfg: SteerConfig, target: Target, n_prompts: int) -> list[Row]:
    """prompts × α; the reference (unsteered) run: α = 0 for add (added when not swept), its own row for clamp."""
    specs = parse_features(cfg.feature)
    alphas = parse_alphas(cfg.alpha) if cfg.alpha is not None else default_alphas(specs)
    if cfg.method == "add" and 0.0 not in alphas:
        alphas = (0.0, *alphas)
    rows = []
    for p in range(n_prompts):
        if cfg.method == "clamp":
            rows.append(Row(p, None, tuple(0.0 for _ in target.features), steered=False))
        for a in alphas:
            values = tuple(a * c for c in target.coefs)
            rows.append(Row(p, a, values, steered=True))
    return rows


def is_reference(cfg: SteerConfig, row: Row) -> bool:
    return not row.steered if cfg.method == "clamp" else row.alpha == 0.0


def steering_for(cfg: SteerConfig, target: Target, device):
    """rows, prompt types [B, T] -> the Steering of that batch."""
    types_sel, generated = parse_positions(cfg.positions)
    sel = torch.as_tensor(sorted(types_sel), device=device, dtype=torch.long)
    directions = target.sae.W_dec[torch.as_tensor(target.features)].detach().to(device)
    ids = torch.as_tensor(target.features, device=device)

    def make(rows: list[Row], types: torch.Tensor) -> Steering:
        steered = torch.as_tensor([r.steered for r in rows], device=device)
        mask = torch.isin(types, sel) & steered[:, None]
        values = torch.as_tensor([r.values for r in rows], dtype=torch.float32, device=device)
        clamp = (target.sae, ids) if cfg.method == "clamp" else None
        return Steering(directions, values, mask, steered & generated, clamp=clamp)

    return make


@torch.no_grad()
def residual_norm(model, prompts: list[Prompt], layer: int, device) -> float:
    """Median ‖x‖ of the residual after the SAE's block over the prompts' tokens (what α is weighed against;
    the median, since an attention-sink first token can be many times the norm of the rest)."""
    from fastsae.lm import ResidualHooks

    norms = []
    with ResidualHooks(model, capture=[layer], stop=True) as hooks:
        for p in prompts:
            x = hooks(torch.as_tensor(p.ids, device=device)[None]).captured[layer][0]
            norms.append(x.float().norm(dim=-1).cpu())
    return float(torch.cat(norms).median())


def _progress(enabled: bool, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
        TimeRemainingColumn(), disable=not enabled, transient=True,
    )  # fmt: skip
    return bar, bar.add_task("steer: generating", total=total)


def run_steer(cfg: SteerConfig) -> dict:
    """Check, generate, measure (and judge); -> the results document (steer_report writes it out)."""
    from fastsae.saes import load_sae

    target = open_target(cfg)
    read = read_prompts(cfg)
    loaded, device = load_steer_model(cfg, target)
    resolve_features(cfg, target, loaded.tokenizer)
    prompts = tokenize_prompts(cfg, read, loaded.tokenizer)
    target.sae = load_sae(target.path, device=device)
    rows = build_rows(cfg, target, len(prompts))
    decoding = Decoding(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.seed, cfg.batch_size)
    model, tokenizer = loaded.model, loaded.tokenizer
    n_batches = len(batches_of(rows, prompts, cfg.batch_size))
    bar, task = _progress(cfg.progress, n_batches * cfg.max_new_tokens)
    with bar:
        gen = generate(
            model, tokenizer, prompts, rows, layer=target.layer, steer=steering_for(cfg, target, device),
            decoding=decoding, bar=bar, task=task,
        )  # fmt: skip
        bar.update(task, description="steer: perplexity")
        sums, counts = response_nll(model, prompts, rows, gen.tokens, batch_size=cfg.batch_size)
    records = []
    for i, row in enumerate(rows):
        p, toks = prompts[row.prompt], gen.tokens[i]
        text = tokenizer.decode(toks, skip_special_tokens=True)
        records.append(
            {"prompt": row.prompt, "source": p.source, "instruction": p.instruction, "alpha": row.alpha,
             "reference": is_reference(cfg, row), "response": text, "n_tokens": int(len(toks)),
             "ended": gen.ended[i], "hit_limit": (not gen.ended[i]) and len(toks) >= cfg.max_new_tokens,
             "perplexity": perplexity(sums[i], counts[i]), "distinct_3": distinct_share(toks),
             "script": main_script(text), "script_switch": script_switch(p.instruction, text),
             "token_ids": [int(t) for t in toks]}
        )  # fmt: skip
    if cfg.judge:
        judge_records(cfg, records)
    return assemble(
        cfg, target, loaded, prompts, records, residual_norm(model, prompts, target.layer, device)
    )


def judge_records(cfg: SteerConfig, records: list[dict]) -> None:
    from fastsae.interp.llm_client import LLMClient
    from fastsae.interp.steer_judge import judge_responses

    cache = Path(cfg.out) / "judge_cache"
    with LLMClient(
        cfg.judge_endpoint, cfg.judge_model, api_key_env=cfg.judge_api_key_env, cache_dir=cache
    ) as client:
        scores = judge_responses(client, [(r["instruction"], r["response"]) for r in records])
        if client.gave_up:
            logger.warning(f"judge: {client.gave_up}; responses without a score keep none")
    for r, s in zip(records, scores, strict=True):
        r.update(
            judge_relevance=s["relevance"],
            judge_fluency=s["fluency"],
            judge_score=s["score"],
            judge_error=s["error"],
        )


def assemble(cfg, target: Target, loaded, prompts, records, resid_norm: float) -> dict:
    W = target.sae.W_dec.detach().float().cpu()
    features = [
        {"id": k, "coef": c, "origin": o, "decoder_norm": float(W[k].norm())}
        for k, c, o in zip(target.features, target.coefs, target.origins, strict=True)
    ]
    direction = sum(c * W[k] for k, c in zip(target.features, target.coefs, strict=True))
    spec = target.info.spec
    scale = target.info.extra.get("activation_scale")
    return {
        "fastsae": "steer",
        "config": cfg.to_json(),
        "sae": {"path": str(target.path), "arch": spec.arch.value, "d_in": spec.d_in, "d_sae": spec.d_sae,
                "layer": target.layer, "hook_name": target.info.hook_name,
                "activation_scale": scale if isinstance(scale, (int, float)) and math.isfinite(scale) else None},
        "model": {"name": loaded.model_id, **{k: v for k, v in loaded.meta.items() if k != "name"}},
        "method": cfg.method,
        "positions": cfg.positions,
        "features": features,
        "direction_norm": float(direction.norm()),  # ‖Σ coef_i W_dec[k_i]‖: α times it is what add adds
        "residual_norm": resid_norm,
        "decoding": {"greedy": cfg.temperature == 0, "temperature": cfg.temperature, "top_p": cfg.top_p,
                     "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens},
        "prompts": [{"source": p.source, "instruction": p.instruction, "tokens": int(len(p.ids))} for p in prompts],
        "records": records,
        "summary": summarize(records),
    }  # fmt: skip
