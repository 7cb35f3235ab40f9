"""The training loop: one pass over the data feeding every SAE of a sweep.

Each batch is read ONCE (one `next(reader)`) and the same tensor goes to every SAE. Per step and SAE:
training_forward → backward (one SAE's graph at a time, to bound memory) → remove the decoder-gradient
component parallel to its rows → clip its gradient norm → one Adam step for all SAEs (a param group per SAE,
with its own lr) → unit-norm decoder rows. All SAEs start from the same seeded init (an SAE trained in a sweep
equals the same SAE trained alone).

No host sync in the step: per-step scalars (loss terms, L0, whether the batch is finite and within the store's
bound) are written into a small device buffer and read back every --log-every steps (and before each eval or
checkpoint). That is also when a bad batch (train/guards.py: StoreCorruptError naming its shard and sequence),
a non-finite loss or a diverging one is detected; the run then raises, writes nothing more, and the last
checkpoint (taken after a clean check) stays the resume point. Before anything is allocated or written, the
sweep's memory and the disk space of its outputs are checked (train/resources.py); a full disk later is one
line (DiskFullError), temp files removed, the last checkpoint kept. SIGTERM/SIGINT: train/interrupt.py.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from fastsae.kernels import feature_counts
from fastsae.lm.devices import pick_device  # one device policy (torchrun's LOCAL_RANK, clear errors)
from fastsae.train.checkpoint import clean_tmp, load_checkpoint, save_checkpoint
from fastsae.train.config import BDecInit, to_json, total_steps
from fastsae.train.guards import NonFiniteError, check_inputs, inputs_ok
from fastsae.train.host_memory import reuse_freed_host_memory
from fastsae.train.interrupt import StopSignals, TrainInterrupted
from fastsae.train.metrics import HeldOut, MetricsLog, plot_curves
from fastsae.train.parallel import Parallel
from fastsae.train.progress import ProgressBar
from fastsae.train.resources import check_disk, check_memory, disk_full_error, is_disk_full
from fastsae.train.run import RUN_JSON, RunPlan, make_reader, plan_run, run_document, write_json_atomic
from fastsae.train.schedule import Schedule
from fastsae.train.sweep_log import SweepLog

logger = logging.getLogger(__name__)

# NonFiniteError (train/guards.py) and make_reader (train/run.py) are re-exported: tests and benchmarks use them
__all__ = ["NonFiniteError", "SweepTrainer", "make_reader", "train_saes"]


class SweepTrainer(SweepLog):
    """Trains the SAEs of a RunPlan in one pass; see the module doc (its bookkeeping: train/sweep_log.py)."""

    def __init__(self, plan: RunPlan, *, console=None):
        from fastsae.saes import SparseAutoencoder

        self.plan, self.cfg = plan, plan.cfg
        self.console = console
        self.device = pick_device(self.cfg.device)
        self.par = Parallel.start(
            self.cfg, len(plan.points), self.device
        )  # under torchrun: train/parallel.py
        self.points = [plan.points[i] for i in self.par.local]  # the SAEs this rank trains
        self.specs = [plan.specs[i] for i in self.par.local]
        if self.device.type == "cpu" and self.cfg.reuse_host_memory:
            reuse_freed_host_memory()  # see train/host_memory.py: else large temporaries page-fault every step
        self.schedule = Schedule.from_config(self.cfg)
        self.total_steps = total_steps(self.cfg)
        n = len(self.specs)
        workers = self.cfg.sae_workers or min(n, torch.get_num_threads())
        self.workers = max(1, min(workers, n)) if self.device.type == "cpu" else 1
        mine = dataclasses.replace(plan, points=self.points, specs=self.specs)
        check_memory(mine, self.device, workers=self.workers)  # before the SAEs are allocated
        self.saes = [
            SparseAutoencoder(
                spec, device=self.device, generator=torch.Generator().manual_seed(self.cfg.seed)
            )
            for spec in self.specs
        ]
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(sae.parameters()), "lr": p.lr}
                for sae, p in zip(self.saes, self.points, strict=True)
            ],
            lr=self.points[0].lr,
            betas=(self.cfg.adam_beta1, self.cfg.adam_beta2),
            # fused: one kernel for all SAEs' params on GPU; on CPU faster than torch's per-tensor loop
            # (benchmarks/cpu_ops.py adam_fused)
            fused=True if self.device.type in ("cuda", "cpu") else None,
        )
        self.energy0: torch.Tensor | None = None  # mean ‖x‖² of the first batch (training units)
        self.init_log(n)  # the step scalars and feature counters (train/sweep_log.py)
        self.saved_step: int | None = None  # step of the checkpoint on disk (None: none yet)
        self.stop = StopSignals()
        self.step = 0
        self.scale = 1.0
        self.reader = None
        self.batches_read = 0
        self._pool: ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- setup
    def init_fresh(self) -> None:
        """Sample-based init: activation scale and b_dec (geometric median), from the first tokens of the stream."""
        from fastsae.saes import geometric_median

        c = self.cfg
        need = c.normalize_activations or c.b_dec_init != BDecInit.ZEROS
        if need:
            # the first init_sample_tokens of the training stream (a separate reader with the same seed;
            # a batch larger than the epoch wraps into the next one)
            sampler = make_reader(self.plan, batch_size=c.init_sample_tokens, device="cpu")
            sample = next(sampler)  # [n, d_in]
            sampler.close()
            del sampler
            check_inputs(sample, self.plan.store, c.layer, "the init sample")
            if c.normalize_activations:
                self.scale = float(sample.shape[1] ** 0.5 / sample.norm(dim=1).mean())
            sample = sample * self.scale
            if c.b_dec_init == BDecInit.GEOMETRIC_MEDIAN:
                b_dec = geometric_median(sample)
            elif c.b_dec_init == BDecInit.MEAN:
                b_dec = sample.mean(0)
            else:
                b_dec = None
            if b_dec is not None:
                with torch.no_grad():
                    for sae in self.saes:
                        sae.b_dec.copy_(b_dec.to(sae.b_dec))

    def state(self) -> dict:
        return {
            "step": self.step,
            "scale": self.scale,
            "window_tokens": self.window_tokens,
            "saes": [sae.state_dict() for sae in self.saes],
            "optimizer": self.optimizer.state_dict(),
            "since_fired": self.since_fired,
            "fire_count": self.fire_count,
            "reader": self.reader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": to_json(self.cfg),
            "mse_references": self.references,
            # the per-step stats not yet logged (a checkpoint between two log steps: SIGTERM/SIGINT)
            "pending_stats": self.hist[: self.hist_len].cpu(),
        }

    def load_state(self, st: dict) -> None:
        st = self.par.select_state(st)  # sweep-parallel: this rank's SAEs of the whole sweep's checkpoint
        self.step, self.scale, self.window_tokens = (
            int(st["step"]),
            float(st["scale"]),
            int(st["window_tokens"]),
        )
        for sae, sd in zip(self.saes, st["saes"], strict=True):
            sae.load_state_dict(sd)
        self.optimizer.load_state_dict(st["optimizer"])
        self.since_fired = [t.to(self.device) for t in st["since_fired"]]
        self.fire_count = [t.to(self.device) for t in st["fire_count"]]
        self.reader.load_state_dict(st["reader"])
        torch.set_rng_state(st["torch_rng"])
        self.references = st.get("mse_references")  # absent from checkpoints of older versions
        pending = st.get("pending_stats")
        if pending is not None and len(pending):
            self.hist[: len(pending)] = pending.to(self.device)
            self.hist_len = len(pending)
        self.saved_step = self.step

    # ---------------------------------------------------------------- the step
    def train_step(self, x: torch.Tensor) -> None:
        """One optimizer step of every SAE on the batch x [B, d_in]; no host sync. The SAEs' forward and
        backward passes are independent (one per thread with ``sae_workers`` > 1); the optimizer step is one."""
        k = self.hist_len
        lr_f, sc_f = self.schedule.lr_factor(self.step), self.schedule.sparsity_factor(self.step)
        rows = x.shape[0] * self.par.part[1]  # data-parallel: x is this rank's part of the global batch
        self.batch_ok[k] = inputs_ok(x)
        if self.scale != 1.0:
            x = x * self.scale
        if self.step == 0:
            self.energy0 = self.par.reduce_mean(x.pow(2).sum(1).mean())
        self.optimizer.zero_grad(set_to_none=True)
        n, data = range(len(self.saes)), self.par.data
        before = [self.par.before_step(sae) for sae in self.saes]
        if self._pool is None:
            counts = [self._sae_step(i, x, lr_f, sc_f, update=not data) for i in n]
        else:
            counts = list(self._pool.map(lambda i: self._sae_step(i, x, lr_f, sc_f, update=not data), n))
        if data:  # one all-reduce of every SAE's gradients and feature counts, then their updates
            counts = self.par.all_reduce(self.saes, counts, before, rows)
            for i in n:
                self._sae_update(i, counts[i])
        self.optimizer.step()
        for sae in self.saes:
            sae.normalize_decoder_()
        self.step += 1
        self.hist_len += 1
        self.window_tokens += rows

    def _sae_step(self, i: int, x: torch.Tensor, lr_f: float, sc_f: float, *, update: bool) -> torch.Tensor:
        """Forward, backward and statistics of SAE i (touches only its own state), then its update unless the
        gradients are all-reduced first; -> its feature counts."""
        k, sae, p = self.hist_len, self.saes[i], self.points[i]
        self.optimizer.param_groups[i]["lr"] = p.lr * lr_f
        out = sae.training_forward(x, sparsity_coef=(p.sparsity_coef or 0.0) * sc_f)
        out.loss.backward()
        with torch.no_grad():
            self.hist[k, i] = torch.stack(
                [out.loss, out.mse_loss, out.sparsity_loss, out.aux_loss, out.l0.mean()]
            ).detach()
            counts = feature_counts(out.acts)  # [d_sae]; from the sparse plan when there is one
        del out
        if update:
            self._sae_update(i, counts)
        return counts

    def _sae_update(self, i: int, counts: torch.Tensor) -> None:
        """Feature bookkeeping and the gradient's projection and clipping of SAE i (after any all-reduce)."""
        c, sae = self.cfg, self.saes[i]
        with torch.no_grad():
            self.fire_count[i] += counts
            self.since_fired[i].add_(1).masked_fill_(counts > 0, 0)
        sae.remove_parallel_grad_()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), c.grad_clip, foreach=True)

    # ---------------------------------------------------------------- the run
    def run(self) -> list[Path]:
        """Train and save (see the module doc); a stop signal checkpoints, a full disk is one line."""
        plan = self.plan
        # may refuse the selection; data-parallel: this rank reads only its rows of each batch
        self.reader = make_reader(plan, batch_size=self.cfg.batch_size, device=self.device, part=self.par.part)
        check_disk(plan)  # before anything is written
        try:
            with self.stop:
                return self._run()
        except BaseException as e:
            if (
                self.par.main and plan.out.is_dir()
            ):  # what a failed write left; the checkpoint stays the resume point
                clean_tmp(plan.out)
            if is_disk_full(e):
                raise disk_full_error(e, plan, saved_step=self.saved_step) from None
            raise

    def _run(self) -> list[Path]:
        plan, c, main = self.plan, self.cfg, self.par.main
        ckpt = plan.checkpoint_path
        if main:  # only rank 0 writes into --out
            plan.out.mkdir(parents=True, exist_ok=True)
            clean_tmp(plan.out)
            write_json_atomic(plan.out / RUN_JSON, run_document(plan))
        resumed = self.par.decide(plan.status == "resume" and ckpt.exists())  # rank 0's view of --out
        if resumed:
            self.load_state(load_checkpoint(ckpt, device="cpu"))
            logger.info(f"resuming {plan.out} from step {self.step} of {self.total_steps}")
        else:
            self.init_fresh()
        if self.par.describe():
            logger.info(self.par.describe())
        if main:
            for p in plan.points:
                plan.sae_dir(p).mkdir(exist_ok=True)
            self.logs = [
                MetricsLog(
                    plan.sae_dir(p) / "metrics.jsonl", keep_through_step=self.step if resumed else None
                )
                for p in plan.points
            ]
        held = HeldOut.from_sequences(
            (
                (h.acts, h.token_types)
                for h in self.reader.iter_holdout(max_tokens=c.eval_tokens, device="cpu")
            ),
            device=self.device,
        )
        check_inputs(held.x, plan.store, c.layer, "the held-out tokens")
        threads = torch.get_num_threads()
        if self.workers > 1:
            # Several SAE steps at once, each on a share of the cores: small matmuls, the sparse bookkeeping and
            # Python gain more from a core of their own than from intra-op threads (benchmarks/cpu_ops.py
            # sae_workers).
            torch.set_num_threads(max(1, threads // self.workers))
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fastsae-sae")
        try:
            self._loop(held)
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            torch.set_num_threads(threads)
            for log in self.logs:
                log.close()
            self.reader.close()
        return self.finish()

    def _loop(self, held: HeldOut) -> None:
        c, T = self.cfg, self.total_steps
        bar = ProgressBar(self, enabled=c.progress and self.par.main, console=self.console)
        with bar:
            if self.step == 0 and c.eval_every and len(held):
                self.evaluate(held)
            self._since = time.perf_counter()
            while self.step < T:
                if self.par.stop_now(bool(self.stop.received), self.step, c.log_every):  # every rank at once
                    self._interrupted()
                w = time.perf_counter()
                x = next(self.reader)  # blocks only when the reader is behind (host time, no device sync)
                self.data_wait += time.perf_counter() - w
                self.batches_read += 1
                self.train_step(x)
                s = self.step
                bar.advance()
                end = s == T
                ev = len(held) and ((c.eval_every and s % c.eval_every == 0) or end)
                ck = c.checkpoint_every and s % c.checkpoint_every == 0 and not end
                if s % c.log_every == 0 or ev or ck or end:
                    recs = self.flush()
                    if recs:
                        bar.show(recs)
                if s % c.feature_sampling_window == 0:
                    self.feature_window()
                if ev:
                    self.evaluate(held)
                if ck:
                    for log in self.logs:
                        log.sync()
                    self._save()

    def _save(self) -> None:
        state = self.par.merge_state(self.state())  # sweep-parallel: every rank's SAEs, on rank 0
        if state is not None:
            save_checkpoint(self.plan.checkpoint_path, state)
        self.saved_step = self.step

    def _interrupted(self) -> None:
        """A stop signal between two steps: check the steps not yet logged, checkpoint them, raise."""
        T, step = self.total_steps, self.step
        if step and step != self.saved_step:
            self.check_pending()
            for log in self.logs:
                log.sync()
            self._save()
            done = f"checkpoint of step {step} of {T} written"
        elif step:
            done = f"its checkpoint of step {step} of {T} is on disk"
        else:
            done = "before the first step, nothing to save"
        signum = self.stop.received or signal.SIGTERM  # under torchrun: another rank's signal
        raise TrainInterrupted(
            f"{signal.Signals(signum).name}: training stopped, {done}; rerun the same command to continue",
            signum,
        )

    def finish(self) -> list[Path]:
        """Save every SAE (activation scale folded in), plot its curves, mark the run complete."""
        from fastsae.saes import SparseAutoencoder, save_sae

        plan, c = self.plan, self.cfg
        hook = f"blocks.{c.layer}.hook_resid_post"
        weights = self.par.gather_weights(self.saes)  # every SAE's, on rank 0
        if weights is None:
            return [plan.sae_dir(p) for p in plan.points]
        if self.par.sweep:  # the other ranks' SAEs, rebuilt from their weights
            self.saes = [SparseAutoencoder(spec, device="cpu") for spec in plan.specs]
            for sae, sd in zip(self.saes, weights, strict=True):
                sae.load_state_dict(sd)
        paths = []
        for sae, p in zip(self.saes, plan.points, strict=True):
            if self.scale != 1.0:
                sae.fold_activation_norm_(self.scale)
            folder = plan.sae_dir(p)
            extra = {
                "config": to_json(c),
                "store": plan.store_identity,
                "sweep_point": dataclasses.asdict(p),
                "activation_scale": self.scale,
                "steps": self.step,
                "tokens": self.step * c.batch_size,
            }
            save_sae(sae.cpu(), folder, hook_name=hook, model_name=plan.store_identity["model"], extra=extra)
            plot_curves(folder / "metrics.jsonl", folder / "curves.png", title=p.name)
            paths.append(folder)
        write_json_atomic(plan.out / RUN_JSON, run_document(plan, complete=True))
        plan.checkpoint_path.unlink(missing_ok=True)
        return paths


def train_saes(cfg, *, console=None) -> list[Path]:
    """Plan (all input checks), then train every SAE of the sweep in one pass; returns the SAE folders."""
    from fastsae.lm.distributed import close_ranks

    plan = plan_run(cfg)
    if plan.status == "complete":
        logger.info(f"{plan.out}: already trained ({len(plan.points)} SAEs); nothing to do")
        return [plan.sae_dir(p) for p in plan.points]
    try:
        return SweepTrainer(plan, console=console).run()
    finally:
        close_ranks()  # the process group a torchrun run started
