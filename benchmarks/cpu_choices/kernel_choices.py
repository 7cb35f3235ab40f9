"""cpu_ops.py's measurements of kernels/: torch_plan's gathers, sort keys and CSR products, torch_path's
masks, ops' feature counts, each against what it replaced."""

from __future__ import annotations

import torch

from benchmarks.cpu_choices.timing import D_IN, D_SAE, N_SMALL_DSAE, N, report, sparse_acts, timed


# ------------------------------------------------------------------------------------- kernels/torch_plan
def bench_pick(a) -> None:
    from fastsae.kernels.torch_plan import _pick

    acts = sparse_acts(N, N_SMALL_DSAE, 0.05)
    rows, cols = acts.nonzero(as_tuple=True)
    perm = torch.argsort(cols, stable=True)  # what ActsPlan.mm_t picks rows with
    t = timed(
        {"v[idx]": lambda: rows[perm], "_pick": lambda: _pick(rows, perm)}, rounds=a.rounds, reps=a.reps
    )
    report("pick", "kernels/torch_plan.py _pick", t, "v[idx]", "_pick", f"1-D gather of {len(perm):,} int64")


def bench_sort_key(a) -> None:
    from fastsae.kernels.torch_plan import _sort_key

    acts = sparse_acts(N, N_SMALL_DSAE, 0.05)
    cols = acts.nonzero(as_tuple=True)[1]
    t = timed(
        {
            "int64": lambda: torch.argsort(cols, stable=True),
            "_sort_key": lambda: torch.argsort(_sort_key(cols, N_SMALL_DSAE), stable=True),
        },
        rounds=a.rounds,
        reps=a.reps,
    )
    what = f"stable argsort of {len(cols):,} column ids (< {N_SMALL_DSAE}), int16 conversion included"
    report("sort_key", "kernels/torch_plan.py _sort_key", t, "int64", "_sort_key", what)


def bench_take(a) -> None:
    from fastsae.kernels.torch_plan import plan_from

    m = torch.randn(N, D_SAE)
    plan = plan_from(sparse_acts(N, D_SAE, 0.05))
    plan.gather(m)  # the flat indices are computed once per plan
    t = timed(
        {"m[rows, cols]": lambda: m[plan.rows, plan.cols], "take": lambda: plan.gather(m)},
        rounds=a.rounds,
        reps=a.reps,
    )
    report("take", "kernels/torch_plan.py ActsPlan.gather", t, "m[rows, cols]", "take", "4096 x 4608 at 5%")


def bench_bag_sum(a) -> None:
    from fastsae.kernels.torch_plan import _bag_sum, _csr, plan_from

    table = torch.randn(D_SAE, D_IN)
    for density in (0.05, 0.01):
        acts = sparse_acts(N, D_SAE, density)
        plan = plan_from(acts)
        vals = plan.values(acts)
        csr = _csr(plan.crow, plan.cols, vals, acts.shape)
        t = timed(
            {
                "dense": lambda acts=acts: acts @ table,
                "sparse.mm": lambda csr=csr: torch.sparse.mm(csr, table),
                "_bag_sum": lambda p=plan, v=vals: _bag_sum(p.cols, table, p.crow, v),
            },
            rounds=a.rounds,
            reps=max(1, a.reps // 2),
        )
        what = f"4096 x 4608 at {density:.0%} times [4608, 576]"
        report(f"bag_sum {density:.0%}", "kernels/torch_plan.py _bag_sum", t, "dense", "_bag_sum", what)
        report(f"bag_sum {density:.0%}", "kernels/torch_plan.py _bag_sum", t, "sparse.mm", "_bag_sum", what)


# ------------------------------------------------------------------------------------- kernels/torch_path
def bench_float_mask(a) -> None:
    # one epilogue block (kernels/torch_path.py encoder_epilogue) of fp32 z: the mask 1[z > θ] applied to z
    g = torch.Generator().manual_seed(0)
    blk, theta = torch.randn(512, 2048, generator=g), torch.full((2048,), 1.645)  # ~5% above θ
    dz, out = torch.empty_like(blk), torch.empty_like(blk)

    def bool_mask():
        torch.sub(blk, theta, out=dz)
        torch.mul(blk, dz > 0, out=out)

    def float_mask():  # as encoder_epilogue: relu + sign in place, then a float product
        torch.sub(blk, theta, out=dz)
        torch.mul(blk, dz.relu_().sign_(), out=out)

    t = timed({"bool": bool_mask, "float 0/1": float_mask}, rounds=a.rounds, reps=a.reps * 4)
    what = "z·1[z > θ] on a 512 x 2048 fp32 block"
    report("float_mask", "kernels/torch_path.py encoder_epilogue", t, "bool", "float 0/1", what)


def bench_nonzero_bool(a) -> None:
    mask = (sparse_acts(512, 2048, 0.05) > 0).float()  # the epilogue's float 0/1 mask of one block
    t = timed(
        {
            "float.nonzero": lambda: mask.nonzero(as_tuple=True),
            "bool.nonzero": lambda: mask.bool().nonzero(as_tuple=True),
        },
        rounds=a.rounds,
        reps=a.reps * 4,
    )
    what = "pattern of a 512 x 2048 float 0/1 mask at 5%"
    report("nonzero_bool", "kernels/torch_path.py encoder_epilogue", t, "float.nonzero", "bool.nonzero", what)


def bench_sign_mask(a) -> None:
    acts = sparse_acts(N, D_SAE, 0.05)
    g = torch.randn(N, D_SAE)
    t = timed(
        {"g * (acts != 0)": lambda: g * (acts != 0), "g * acts.sign()": lambda: g * acts.sign()},
        rounds=a.rounds,
        reps=a.reps,
    )
    what = "dense grad_z, 4096 x 4608 at 5%"
    report("sign_mask", "kernels/torch_path.py encoder_grads", t, "g * (acts != 0)", "g * acts.sign()", what)


# -------------------------------------------------------------------------------------------- kernels/ops
def bench_feature_counts(a) -> None:
    from fastsae.kernels import feature_counts
    from fastsae.kernels.torch_plan import plan_from

    acts = sparse_acts(N, D_SAE, 0.05)
    planned = acts.clone()
    plan_from(planned).attach(planned)  # what the training op's encoders attach
    t = timed(
        {
            "(acts > 0).sum(0)": lambda: (acts > 0).sum(0),
            "sign pass": lambda: feature_counts(acts),
            "plan bincount": lambda: feature_counts(planned),
        },
        rounds=a.rounds,
        reps=a.reps,
    )
    where, what = "kernels/ops.py feature_counts", "4096 x 4608 at 5%"
    report("feature_counts", where, t, "(acts > 0).sum(0)", "sign pass", what + ", no plan")
    report("feature_counts", where, t, "(acts > 0).sum(0)", "plan bincount", what + ", plan attached")
