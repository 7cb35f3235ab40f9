"""`fastsae eval` on a tiny Llama: a store harvested from tiny chats, SAEs trained on it, then spliced in.

Correctness: an identity SAE gives clean CE and KL 0, a zero SAE zero-ablation CE, --with-error clean CE;
the spliced CE equals a plain forward with a hand-written hook; the reconstruction metrics equal train's
held-out metrics; batched equals batch-1. Input checks: overlap, d_in, layer, models, empty set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.interp.eval_config import EvalConfig
from fastsae.interp.evalset import EvalSetError
from fastsae.interp.evaluate import EvalInputError, run_eval
from fastsae.saes import (
    HeldOut,
    SAESpec,
    SparseAutoencoder,
    heldout_metrics,
    load_sae,
    read_sae_info,
    save_sae,
)
from fastsae.store import open_store
from fastsae.store.split import holdout_indices
from tests._worlds import tiny_harvest, tiny_model, tiny_train

LAYER = 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = tiny_model(root)
    store = tiny_harvest(root, model, n_chats=32, layers=(LAYER, 2))
    saes = tiny_train(store, root / "sae", layer=LAYER)
    return {"root": root, "model": model, "chats": root / "store-chats.jsonl", "sae": saes[0], "store": store}


def handmade(world, name: str, W_enc, W_dec, *, layer: int = LAYER) -> Path:
    """An SAE folder with these weights and the trained SAE's record of its run (store, held-out split)."""
    d_in, d_sae = W_enc.shape
    sae = SparseAutoencoder(SAESpec("standard", d_in, d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    info = read_sae_info(world["sae"])
    out = world["root"] / name
    save_sae(
        sae, out, hook_name=f"blocks.{layer}.hook_resid_post", model_name=info.model_name, extra=info.extra
    )
    return out


def identity_sae(world, name="identity", **kw) -> Path:
    eye = torch.eye(64)
    return handmade(
        world, name, torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0), **kw
    )  # relu(x) − relu(−x)


def cfg(world, *saes, **kw) -> EvalConfig:
    return EvalConfig(sae=tuple(str(s) for s in saes), out=str(world["root"] / "out"), progress=False, **kw)


def overall(doc, i=0, group="all"):
    return doc["saes"][i]["metrics"][group]


@pytest.fixture(scope="module")
def main_doc(world):
    return run_eval(
        cfg(
            world,
            world["sae"],
            identity_sae(world),
            handmade(world, "zero", torch.zeros(64, 8), torch.zeros(8, 64)),
        )
    )


def test_identity_sae_gives_clean_ce_and_zero_kl(main_doc):
    m = overall(main_doc, 1)
    assert abs(m["ce_sae"] - m["ce_clean"]) < 1e-9 and abs(m["kl"]) < 1e-9 and m["mse"] == 0
    assert m["ce_loss_recovered_mean"] == pytest.approx(1.0) and m["ce_loss_recovered_zero"] == pytest.approx(
        1.0
    )


def test_zero_sae_gives_zero_ablation_ce(main_doc):
    m = overall(main_doc, 2)
    assert abs(m["ce_sae"] - m["ce_zero_abl"]) < 1e-9
    assert m["ce_loss_recovered_zero"] == pytest.approx(0.0, abs=1e-9)


def test_breakdown_by_token_type_and_nulls_with_reasons(main_doc):
    s = main_doc["saes"][0]
    assert list(s["metrics"]) == main_doc["groups"] and main_doc["groups"][:2] == ["all", "assistant"]
    by_type = [
        s["metrics"][g]["scored_positions"] for g in ("assistant", "user", "system", "template", "special")
    ]
    assert sum(by_type) == s["metrics"]["all"]["scored_positions"] > 0
    assert s["metrics"]["assistant"]["mse_st"] is None  # no special token is an assistant token
    assert "special" in s["null_reasons"]["assistant"]["mse_st"]
    assert (
        s["metrics"]["first"]["ce_sae"] is None and "never predicted" in s["null_reasons"]["first"]["ce_sae"]
    )
    assert s["metrics"]["first"]["tokens"] == main_doc["evaluation"]["num_sequences"]
    json.dumps(main_doc, allow_nan=False)  # no NaN anywhere
    assert s["overlap"] == {"checked": True, "sequences": 0}


def test_with_error_gives_clean_ce(world):
    m = overall(run_eval(cfg(world, world["sae"], with_error=True, limit=4)))
    assert abs(m["ce_sae"] - m["ce_clean"]) < 1e-6 and abs(m["kl"]) < 1e-6


def test_spliced_ce_equals_a_forward_with_a_hand_written_hook(world, main_doc):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(world["model"], dtype=torch.float32).eval()
    sae = load_sae(world["sae"])
    store = open_store(world["store"])

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        new = sae.decode(sae.encode(h))
        return (new, *output[1:]) if isinstance(output, tuple) else new

    total, n = 0.0, 0
    handle = model.model.layers[LAYER].register_forward_hook(hook)
    try:
        for i in main_doc["evaluation"]["sequences"]:
            ids = torch.from_numpy(store.sequence(i).token_ids.astype(np.int64))[None]
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            total -= float(logp.gather(-1, ids[0, 1:, None]).sum())
            n += ids.shape[1] - 1
    finally:
        handle.remove()
    m = overall(main_doc)
    assert n == m["scored_positions"]
    assert abs(total / n - m["ce_sae"]) < 1e-5


def test_reconstruction_metrics_equal_trains_heldout_metrics(world, main_doc):
    store = open_store(world["store"])
    sae = load_sae(world["sae"])
    seqs = [store.sequence(i) for i in main_doc["evaluation"]["sequences"]]
    held = HeldOut.from_sequences(((s.acts(LAYER), s.token_types) for s in seqs), device="cpu")
    ref = heldout_metrics(sae, held)
    m = overall(main_doc)
    for key, v in ref.items():
        assert m[key] == pytest.approx(v, rel=1e-4, abs=1e-7), key
    logged = [json.loads(line) for line in (world["sae"] / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logged if r.get("split") == "heldout"][-1]
    if last["heldout_tokens"] == m["tokens"]:  # train held every held-out token: its own log agrees too
        assert m["mse"] == pytest.approx(last["mse"], rel=1e-3)


def test_batched_equals_batch_one(world):
    a = run_eval(cfg(world, world["sae"], limit=6))
    b = run_eval(cfg(world, world["sae"], limit=6, batch_tokens=1))
    for g in a["groups"]:
        for k, v in a["saes"][0]["metrics"][g].items():
            w = b["saes"][0]["metrics"][g][k]
            assert (v is None) == (w is None), (g, k)
            if v is not None:
                assert abs(v - w) <= 1e-5 * max(1.0, abs(v)), (g, k, v, w)


def test_training_conversations_are_refused_unless_allowed(world):
    with pytest.raises(EvalSetError, match=r"\d+ of the \d+ evaluation sequences are training sequences"):
        run_eval(cfg(world, world["sae"], data=(str(world["chats"]),), limit=6))
    doc = run_eval(cfg(world, world["sae"], data=(str(world["chats"]),), limit=6, allow_overlap=True))
    assert doc["saes"][0]["overlap"]["sequences"] > 0 and doc["evaluation"]["kind"] == "data"


def test_fresh_data_not_in_the_store_passes_the_overlap_check(world, tmp_path):
    from tests.test_harvest_store import write_chats

    doc = run_eval(cfg(world, world["sae"], data=(str(write_chats(tmp_path / "new.jsonl", n=4, seed=7)),)))
    assert doc["saes"][0]["overlap"] == {"checked": True, "sequences": 0}
    assert doc["evaluation"]["num_sequences"] == 4


def test_bad_input_is_one_clear_error(world, tmp_path, caplog):
    from tests._tiny_models import save_tiny_model, tiny_tokenizer

    small = handmade(world, "d32", torch.zeros(32, 8), torch.zeros(8, 32))
    with pytest.raises(EvalInputError, match="d_in 32 does not fit the model's d_model 64"):
        run_eval(cfg(world, small))
    deep = identity_sae(world, "deep", layer=9)
    with pytest.raises(EvalInputError, match="layer 9 is not in the model"):
        run_eval(cfg(world, deep))
    other = identity_sae(world, "other_model")
    meta = json.loads((other / "fastsae.json").read_text())
    meta["extra"]["store"] = {
        **meta["extra"]["store"],
        "path": str(tmp_path / "gone"),
        "model": "another/model",
    }
    (other / "fastsae.json").write_text(json.dumps(meta))
    with pytest.raises(EvalInputError, match="different models"):
        run_eval(cfg(world, world["sae"], other))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EvalSetError, match="empty evaluation set"):
        run_eval(cfg(world, world["sae"], data=(str(empty),)))
    twin = save_tiny_model("llama", tmp_path / "twin", tiny_tokenizer("llama"), seed=1)
    with caplog.at_level(logging.WARNING, logger="fastsae"):
        run_eval(cfg(world, world["sae"], model=str(twin), limit=2))
    assert any("is not the one store" in r.getMessage() for r in caplog.records)


def test_the_cli_writes_every_output_and_reports_errors_in_one_line(world, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    sae, ident = str(world["sae"]), str(identity_sae(world))
    r = runner.invoke(
        app, ["eval", "--sae", sae, ident, "--out", str(out), "--limit", "3", "--no-progress", "--compare"]
    )
    assert r.exit_code == 0, r.output
    for name in ("results.json", "results.csv", "results.md", "frontier_mse.png", "frontier_ce_recovered.png",
                 "by_type_delta_loss.png"):  # fmt: skip
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    assert [s["path"] for s in doc["saes"]] == [sae, ident] and doc["saes"][0]["identity"]["arm"] == "FAST"
    assert "Δloss asst" in (out / "results.md").read_text()
    r = runner.invoke(app, ["eval", "--sae", str(tmp_path / "nope"), "--out", str(out)])
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and r.output.startswith("error: ")


def test_data_with_nothing_usable_is_one_error_line_through_the_cli(world, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"  # any format harvest reads (fastsae.chats), here without a conversation
    pq.write_table(pa.table({"prompt_id": [1, 2]}), bad)
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["eval", "--sae", str(world["sae"]), "--data", str(bad), "--out", str(out)])
    # one line: raised before the model loads (its weight-loading bar would print first)
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0, r.output
    assert r.output.startswith(f"error: empty evaluation set: {bad}: 0 usable records of 2 (2 unknown_schema")
    assert "its columns are prompt_id" in r.output and not out.exists()


def test_held_out_split_rule():
    # train and eval share fastsae.store.split.holdout_indices; its rule: round(fraction * S), at least one
    # when fraction > 0, never all, sorted and unique, a function of (S, seed, fraction) only
    for n in (1, 2, 3, 10, 97, 1000):
        for frac in (0.0, 0.01, 0.1, 0.25, 0.5):
            a = holdout_indices(n, 42, fraction=frac)
            want = 0 if frac == 0 or n < 2 else min(max(1, round(frac * n)), n - 1)
            assert len(a) == want and len(np.unique(a)) == want and np.all(np.diff(a) > 0)
            assert a.size == 0 or (a[0] >= 0 and a[-1] < n)
            np.testing.assert_array_equal(a, holdout_indices(n, 42, fraction=frac))
    assert not np.array_equal(holdout_indices(1000, 0, fraction=0.1), holdout_indices(1000, 1, fraction=0.1))


def test_saelens_compatible_skips_bos_eos_pad_inputs_and_zeroes_every_position(world, main_doc):
    from fastsae.interp.evaluate import saelens_skip_ids
    from tests._tiny_models import tiny_tokenizer

    skip = saelens_skip_ids(tiny_tokenizer("llama"), "cpu")
    assert len(skip) > 0
    doc = run_eval(cfg(world, world["sae"], identity_sae(world), saelens_compatible=True))
    store = open_store(world["store"])
    ids = [store.sequence(i).token_ids for i in doc["evaluation"]["sequences"]]
    scored = sum(int((~np.isin(s[:-1], skip.numpy())).sum()) for s in ids)
    m, ident = overall(doc), overall(doc, 1)
    assert m["scored_positions"] == scored < overall(main_doc)["scored_positions"]
    assert m["tokens"] == sum(int((~np.isin(s, skip.numpy())).sum()) for s in ids)
    assert abs(ident["ce_sae"] - ident["ce_clean"]) < 1e-9
    assert doc["evaluation"]["saelens_compatible"] and "bos, eos or pad" in doc["evaluation"]["scored"]
