"""`fastsae steer` on a tiny Llama: a store harvested from tiny chats, hand-made SAEs recording it.

Exactness: α = 0 gives the unsteered greedy tokens; a batch gives the tokens of one-at-a-time; the hook adds
exactly α·W_dec[k] after block L at the chosen positions and nothing elsewhere (residual streams at every
layer); generated-only steering leaves the prompt forward alone; clamping a feature to its own value changes
nothing and otherwise changes only that feature's term (JumpReLU, TopK). Then the CLI end to end, `top:`
through a features artifact, the judge through a loopback server, and each bad input as one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.interp.steer import build_rows, open_target, run_steer, steering_for
from fastsae.interp.steer_config import SteerConfig
from fastsae.interp.steer_generate import Decoding, Prompt, Row, generate, prompt_tokens
from fastsae.interp.steer_hook import Steering
from fastsae.lm import ResidualHooks, load_model
from fastsae.saes import SAESpec, SparseAutoencoder, load_sae, save_sae
from fastsae.store import TokenType

LAYER = 1
QUESTIONS = [
    "What is the capital of France?",
    "How can I help you today?",
    "Write a short poem about the sea.",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests._worlds import tiny_harvest, tiny_model

    root = tmp_path_factory.mktemp("steer")
    model_dir = tiny_model(root)
    tiny_harvest(root, model_dir, n_chats=6, layers=(LAYER,))
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in QUESTIONS)
    )
    loaded = load_model(str(model_dir), progress=False)
    w = {"root": root, "model_dir": model_dir, "store": root / "store", "prompts": prompts, "loaded": loaded}
    w["sae"] = make_sae(w, "jumprelu")
    return w


def make_sae(world, arch: str, *, name: str | None = None, d_in: int = 64, constant: dict | None = None):
    """A random SAE folder that records the world's store (as train would); `constant` {k: value}: feature
    k reads nothing and fires at that value everywhere (its current value is known at every position)."""
    spec = SAESpec(arch, d_in, 32, k=4)
    sae = SparseAutoencoder(spec, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
        if arch == "jumprelu":
            sae.threshold.fill_(0.5)
        for k, v in (constant or {}).items():
            sae.W_enc[:, k] = 0.0
            sae.b_enc[k] = v
    store = {"path": str(world["store"]), "model": str(world["model_dir"]), "layer": LAYER}
    out = world["root"] / (name or f"sae-{arch}")
    save_sae(sae, out, hook_name=f"blocks.{LAYER}.hook_resid_post", model_name="tiny", extra={"store": store})
    return out


def cfg(world, **kw) -> SteerConfig:
    base = {"sae": str(world["sae"]), "feature": "3", "out": str(world["root"] / "out"),
            "prompts": (str(world["prompts"]),), "max_new_tokens": 6, "progress": False, "device": "cpu"}  # fmt: skip
    return SteerConfig(**{**base, **kw})


def prompts_of(world) -> list[Prompt]:
    tok = world["loaded"].tokenizer
    out = []
    for i, q in enumerate(QUESTIONS):
        messages = ({"role": "user", "content": q},)
        out.append(Prompt(messages, f"q:{i}", *prompt_tokens(tok, messages)))
    return out


def run_rows(world, c: SteerConfig, *, batch_size: int):
    target = open_target(c)
    target.features, target.coefs, target.origins = [3], [1.0], ["3"]
    target.sae = load_sae(target.path)
    prompts = prompts_of(world)
    rows = build_rows(c, target, len(prompts))
    m = world["loaded"]
    gen = generate(
        m.model, m.tokenizer, prompts, rows, layer=LAYER, steer=steering_for(c, target, "cpu"),
        decoding=Decoding(c.max_new_tokens, c.temperature, c.top_p, c.seed, batch_size=batch_size),
    )  # fmt: skip
    return rows, gen.tokens


def unsteered(world, prompt: Prompt, n: int) -> list[int]:
    m = world["loaded"]
    ids = torch.as_tensor(prompt.ids)[None]
    out = m.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
    )
    return out[0, ids.shape[1] :].tolist()


def test_alpha_zero_gives_the_unsteered_greedy_tokens(world):
    rows, tokens = run_rows(world, cfg(world, alpha="0,40"), batch_size=8)
    prompts = prompts_of(world)
    zero = [i for i, r in enumerate(rows) if r.alpha == 0.0]
    assert len(zero) == len(prompts)
    for i in zero:
        assert tokens[i].tolist() == unsteered(world, prompts[rows[i].prompt], 6)
    by = {(r.prompt, r.alpha): tokens[i].tolist() for i, r in enumerate(rows)}
    assert any(by[(p, 40.0)] != by[(p, 0.0)] for p in range(len(prompts)))  # α = 40 does steer


@pytest.mark.parametrize("positions", ["all", "user,generated"])
def test_a_batch_gives_the_tokens_of_one_at_a_time(world, positions):
    c = cfg(world, alpha="0,15,-30", positions=positions)
    _, batched = run_rows(world, c, batch_size=9)
    _, single = run_rows(world, c, batch_size=1)
    assert [t.tolist() for t in batched] == [t.tolist() for t in single]


def _streams(world, prompt: Prompt, steering=None) -> dict:
    model = world["loaded"].model
    layers = list(range(model.config.num_hidden_layers))
    replace = {LAYER: steering} if steering is not None else None
    with ResidualHooks(model, capture=layers, replace=replace) as hooks:
        return hooks(torch.as_tensor(prompt.ids)[None]).captured


def test_the_hook_adds_exactly_alpha_w_dec_after_block_L_and_nothing_elsewhere(world):
    prompt = prompts_of(world)[0]
    W = load_sae(world["sae"]).W_dec.detach()
    alpha = 25.0
    mask = torch.as_tensor(prompt.types == TokenType.USER)[None]
    assert 0 < int(mask.sum()) < mask.shape[1]
    s = Steering(W[[3]], torch.tensor([[alpha]]), mask, torch.tensor([False]))
    clean, steered = _streams(world, prompt), _streams(world, prompt, s)
    first = int(mask[0].nonzero()[0])
    for L in clean:
        if L < LAYER:
            assert torch.equal(clean[L], steered[L])
        elif L == LAYER:
            diff = steered[L][0] - clean[L][0]
            assert torch.equal(diff[~mask[0]], torch.zeros_like(diff[~mask[0]]))
            torch.testing.assert_close(
                diff[mask[0]], (alpha * W[3]).expand_as(diff[mask[0]]), rtol=0, atol=1e-4
            )
        else:  # later blocks: causal, so positions before the first steered one are untouched
            assert torch.equal(clean[L][0, :first], steered[L][0, :first])
            assert not torch.equal(clean[L][0, first:], steered[L][0, first:])


def test_cached_steps_are_generated_positions():
    s = Steering(
        torch.ones(1, 2),
        torch.ones(2, 1),
        torch.tensor([[True, False], [False, False]]),
        torch.tensor([True, False]),
    )
    assert s.mask(2).tolist() == [[True, False], [False, False]]
    assert s.mask(1).tolist() == [[True], [False]]
    assert s.mask(1).tolist() == [[True], [False]]
    with pytest.raises(RuntimeError, match="KV cache"):
        s.mask(3)


def test_steering_only_generated_tokens_keeps_the_first_new_token(world):
    rows, tokens = run_rows(world, cfg(world, alpha="0,200", positions="generated"), batch_size=8)
    by = {(r.prompt, r.alpha): tokens[i].tolist() for i, r in enumerate(rows)}
    for p in range(len(QUESTIONS)):
        assert by[(p, 200.0)][0] == by[(p, 0.0)][0]  # made by the prompt's forward, never steered here
    assert any(by[(p, 200.0)] != by[(p, 0.0)] for p in range(len(QUESTIONS)))


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_clamping_a_feature_to_its_own_value_changes_nothing(world, arch):
    path = make_sae(world, arch, name=f"const-{arch}", constant={3: 7.0})
    sae = load_sae(path)
    prompt = prompts_of(world)[1]
    x = _streams(world, prompt)[LAYER]
    assert torch.allclose(sae.encode(x)[..., 3], torch.tensor(7.0))
    c = cfg(world, sae=str(path), method="clamp", alpha="7")
    rows, tokens = run_rows(world, c, batch_size=4)
    for i, r in enumerate(rows):
        assert tokens[i].tolist() == unsteered(world, prompts_of(world)[r.prompt], 6)
    every = torch.ones(1, len(prompt.ids), dtype=torch.bool)
    for value in (7.0, 9.5):
        s = Steering(
            sae.W_dec[[3]].detach(),
            torch.tensor([[value]]),
            every,
            torch.tensor([False]),
            clamp=(sae, torch.tensor([3])),
        )
        got = _streams(world, prompt, s)[LAYER]
        if value == 7.0:
            assert torch.equal(got, x)
        else:
            torch.testing.assert_close(
                got - x, ((value - 7.0) * sae.W_dec[3]).expand_as(x), rtol=0, atol=1e-4
            )


def test_clamping_changes_only_that_features_term_for_topk(world):
    sae = load_sae(make_sae(world, "topk", name="topk-plain"))
    prompt = prompts_of(world)[2]
    x = _streams(world, prompt)[LAYER]
    acts = sae.encode(x)[0]
    k = int(acts.gt(0).sum(0).argmax())  # a feature TopK picks somewhere, not everywhere
    assert 0 < int(acts[:, k].gt(0).sum()) <= acts.shape[0]
    every = torch.ones(1, len(prompt.ids), dtype=torch.bool)
    s = Steering(
        sae.W_dec[[k]].detach(),
        torch.tensor([[0.0]]),
        every,
        torch.tensor([False]),
        clamp=(sae, torch.tensor([k])),
    )
    got = _streams(world, prompt, s)[LAYER][0]
    # x' = x − f_k(x)·W_dec[k]: the other picks and the error are x's own (no re-encoding of x')
    torch.testing.assert_close(got - x[0], -acts[:, k, None] * sae.W_dec[k], rtol=0, atol=1e-4)


runner = CliRunner()


def test_the_cli_writes_every_output(world, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["steer", "--sae", str(world["sae"]), "--feature", "3:2", "--alpha", "0,10,20",
                            "--prompts", str(world["prompts"]), "--max-new-tokens", "5", "--out", str(out),
                            "--no-progress", "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "steer.jsonl").read_text().splitlines()]
    assert len(records) == len(QUESTIONS) * 3
    assert {r["alpha"] for r in records} == {0.0, 10.0, 20.0}
    for rec in records:
        assert (
            1 <= rec["n_tokens"] <= 5 and rec["perplexity"] >= 1 and rec["reference"] == (rec["alpha"] == 0.0)
        )
        assert rec["hit_limit"] == (not rec["ended"] and rec["n_tokens"] == 5)
    doc = json.loads((out / "steer.json").read_text())
    assert doc["model"]["name"] == str(world["model_dir"])  # the store's model, found through the SAE folder
    assert doc["features"][0]["id"] == 3 and doc["features"][0]["coef"] == 2.0
    assert doc["summary"]["measure"] == "perplexity"
    md = (out / "steer.md").read_text()
    assert "Sweet spot (by perplexity)" in md and QUESTIONS[0] in md
    assert (out / "steer.png").read_bytes()[:4] == b"\x89PNG"


def _features_folder(tmp_path, d_sae: int, tokens: list[dict]):
    from fastsae.interp.feature_artifact import write_artifact

    folder = tmp_path / "feats"
    write_artifact(folder, {"sae": {"d_sae": d_sae}}, {"dead": np.zeros(d_sae, np.uint8)})
    (folder / "special_tokens.json").write_text(json.dumps({"n_sequences": 6, "tokens": tokens}))
    return folder


def test_top_reads_the_special_token_table(world, tmp_path):
    from fastsae.interp.steer import resolve_features

    top = [{"feature": 11, "value": 4.0}, {"feature": 5, "value": 2.0}]
    feats = _features_folder(
        tmp_path, 32, [{"token": "<|start_header_id|>", "id": 2, "kind": "special", "top": top}]
    )
    c = cfg(world, feature="top:<|start_header_id|>,top2:<|start_header_id|>:-1,7", features_from=str(feats))
    target = open_target(c)
    resolve_features(c, target, world["loaded"].tokenizer)
    assert target.features == [11, 5, 7] and target.coefs == [1.0, -1.0, 1.0]


def _error(args) -> str:
    r = runner.invoke(app, ["steer", *args])
    assert r.exit_code == 2, r.output
    lines = [s for s in r.output.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_bad_input_is_one_clear_line(world, tmp_path):
    base = ["--sae", str(world["sae"]), "--out", str(tmp_path / "o"), "--prompts", str(world["prompts"]),
            "--no-progress", "--device", "cpu", "--max-new-tokens", "2"]  # fmt: skip
    assert "feature 32 is not in the SAE (d_sae 32)" in _error([*base, "--feature", "32"])
    assert "--features-from" in _error([*base, "--feature", "top:<|eot_id|>"])
    feats = _features_folder(tmp_path, 32, [{"token": "<|eot_id|>", "id": 4, "kind": "special", "top": []}])
    with_feats = [*base, "--features-from", str(feats)]
    assert "tokenizer has no token '<|im_start|>'" in _error([*with_feats, "--feature", "top:<|im_start|>"])
    assert "not in" in _error([*with_feats, "--feature", "top:<|start_header_id|>"])
    assert "'ten' is not a number" in _error([*base, "--feature", "3", "--alpha", "0,ten"])
    narrow = make_sae(world, "jumprelu", name="narrow", d_in=32)
    assert "d_in 32 does not fit" in _error([*base[2:], "--sae", str(narrow), "--feature", "3"])
    only_assistant = tmp_path / "a.jsonl"
    only_assistant.write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    line = _error(
        [*base[:4], "--prompts", str(only_assistant), "--feature", "3", "--no-progress", "--device", "cpu"]
    )
    assert "no usable prompt" in line
    garbage = tmp_path / "g.jsonl"
    garbage.write_text("{not json\n")
    assert "--prompts" in _error([*base[:4], "--prompts", str(garbage), "--feature", "3"])


def test_the_judge_scores_every_response(world, tmp_path):
    from tests._openai_server import OpenAIServer

    def respond(req):
        text = req.last_user
        return "Fine. Rating: [[2]]" if "fluency" in text else "Loosely. Rating: [[1]]"

    with OpenAIServer(respond=respond) as server:
        c = cfg(world, alpha="0,10", judge=True, judge_endpoint=server.url, judge_model="judge",
                out=str(tmp_path / "j"), max_new_tokens=3)  # fmt: skip
        doc = run_steer(c)
    assert doc["summary"]["measure"] == "judge_score"
    for r in doc["records"]:
        assert (r["judge_relevance"], r["judge_fluency"]) == (1, 2) and r["judge_score"] == pytest.approx(
            4 / 3
        )
    assert doc["summary"]["sweet_spot"] == []  # equal scores: no prompt wins


def test_sampling_is_seeded(world):
    c = cfg(world, alpha="0,10", temperature=1.0)
    _, a = run_rows(world, c, batch_size=8)
    _, b = run_rows(world, c, batch_size=8)
    _, other = run_rows(world, cfg(world, alpha="0,10", temperature=1.0, seed=5), batch_size=8)
    assert [t.tolist() for t in a] == [t.tolist() for t in b]
    assert [t.tolist() for t in a] != [t.tolist() for t in other]


def test_measures_and_the_sweet_spot():
    from fastsae.interp.steer_measures import distinct_share, script_switch, summarize

    assert distinct_share([1, 2, 3, 1, 2, 3]) == 3 / 4 and distinct_share([1, 2]) is None
    assert script_switch("What is this?", "Это тест") == 1.0 and script_switch("What?", "It is.") == 0.0
    assert script_switch("What?", "42") is None

    def rec(prompt, alpha, ppl, distinct):
        return {"prompt": prompt, "alpha": alpha, "reference": alpha == 0, "perplexity": ppl, "distinct_3": distinct,
                "n_tokens": 5, "script_switch": 0.0, "hit_limit": False}  # fmt: skip

    records = [rec(p, 0.0, 4.0, 0.9) for p in (0, 1)]
    records += [rec(p, 1.0, 3.0, 0.9) for p in (0, 1)]  # lower perplexity, same repetition: wins
    records += [rec(p, 2.0, 2.0, 0.3) for p in (0, 1)]  # lower perplexity through a loop: losses
    records += [rec(0, 3.0, 3.5, 0.85), rec(1, 3.0, 5.0, 0.9)]  # one win, one loss: no
    records += [rec(p, 4.0, 3.9, 0.95) for p in (0, 1)]
    s = summarize(records)
    beats = {p["alpha"]: p["beats"] for p in s["points"] if not p["reference"]}
    assert beats == {1.0: True, 2.0: False, 3.0: False, 4.0: True}
    assert s["measure"] == "perplexity" and s["sweet_spot"] == [[1.0, 1.0], [4.0, 4.0]]


def test_a_batch_gives_the_tokens_of_one_at_a_time_with_a_sliding_window():
    from tests._tiny_models import build_tiny_model, tiny_tokenizer

    tok = tiny_tokenizer(
        "qwen2"
    )  # its template adds a default system prompt: prompts pass the 16-token window
    model = build_tiny_model("qwen2", vocab_size=len(tok))
    prompts = []
    for i, q in enumerate(QUESTIONS):
        messages = ({"role": "user", "content": q},)
        prompts.append(Prompt(messages, f"q:{i}", *prompt_tokens(tok, messages)))
    assert min(len(p.ids) for p in prompts) > 16 and len({len(p.ids) for p in prompts}) > 1
    W = torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    rows = [Row(p, a, (a,), True) for p in range(len(prompts)) for a in (0.0, 3.0)]

    def steer(batch, types):
        values = torch.tensor([r.values for r in batch])
        return Steering(W, values, types != 255, torch.ones(len(batch), dtype=torch.bool))

    def run(size):
        gen = generate(
            model, tok, prompts, rows, layer=LAYER, steer=steer, decoding=Decoding(6, batch_size=size)
        )
        return [t.tolist() for t in gen.tokens]

    batched = run(len(rows))
    assert batched == run(1)
    assert any(batched[2 * p] != batched[2 * p + 1] for p in range(len(prompts)))  # α = 3 does steer


def test_clamp_runs_an_unsteered_reference_beside_the_sweep(world, tmp_path):
    from fastsae.interp.steer_report import write_all

    doc = run_steer(cfg(world, method="clamp", alpha="0,5", positions="special,generated", max_new_tokens=3))
    refs = [r for r in doc["records"] if r["reference"]]
    assert [r["alpha"] for r in refs] == [None] * len(QUESTIONS)
    assert sorted({r["alpha"] for r in doc["records"] if not r["reference"]}) == [0.0, 5.0]
    assert [p["alpha"] for p in doc["summary"]["points"]] == [None, 0.0, 5.0]
    write_all(doc, tmp_path)
    assert "| unsteered |" in (tmp_path / "steer.md").read_text()
