"""SweepTrainer's per-step bookkeeping: the device buffer of step scalars and feature counters, read back
(the only host syncs) every --log-every steps, checked (train/guards.py) and written as the 'train',
'features' and 'heldout' lines of each SAE's metrics.jsonl. The loop itself is train/trainer.py."""

from __future__ import annotations

import time

import torch

from fastsae.train.guards import bad_input_error, check_losses, references
from fastsae.train.metrics import HeldOut, MetricsLog, heldout_metrics

STAT_NAMES = ("loss", "mse_loss", "sparsity_loss", "aux_loss", "l0")


class SweepLog:
    """Mixed into SweepTrainer (which sets cfg, par, plan, points, saes, schedule, scale, step, energy0)."""

    def init_log(self, n: int) -> None:
        """The buffers of n SAEs, on self.device; no syncs until they are read back."""
        dev = self.device
        self.since_fired = [torch.zeros(s.d_sae, dtype=torch.int64, device=dev) for s in self.saes]
        self.fire_count = [torch.zeros(s.d_sae, dtype=torch.int64, device=dev) for s in self.saes]
        self.window_tokens = 0
        self.hist = torch.zeros(
            max(1, self.cfg.log_every), n, len(STAT_NAMES), device=dev
        )  # [log_every, n, 5]
        self.batch_ok = torch.ones(max(1, self.cfg.log_every), dtype=torch.bool, device=dev)
        self.hist_len = 0
        self.references: list[float] | None = None  # per SAE: its divergence reference (train/guards.py)
        self.logs: list[MetricsLog] = []
        self.data_wait = 0.0  # seconds the loop waited in next(reader) since the last train line
        self._since = time.perf_counter()  # when the current train-line window started

    def check_pending(self) -> torch.Tensor | None:
        """Read the per-step buffer back and check it (train/guards.py); returns it [n, n_saes, 5] on the host."""
        n = self.hist_len
        if n == 0:
            return None
        hist, ok = self.par.reduce_stats(self.hist[:n], self.batch_ok[:n])  # data-parallel: over the ranks
        hist, ok = hist.cpu(), ok.cpu()
        first = self.step - n
        if not bool(ok.all()):
            bad = first + int((~ok).nonzero()[0, 0])
            raise bad_input_error(self.plan.store, self.cfg.layer, f"the training batch of step {bad}")
        if self.references is None and first == 0:
            self.references = references(hist[0, :, 1], float(self.energy0))
        check_losses(hist, first, self.references, self.points)
        return hist

    def flush(self) -> list[dict] | None:
        """Read the per-step buffer back, check it, and write one 'train' line per SAE."""
        hist = self.check_pending()
        if hist is None:
            return None
        dead = torch.stack(
            [(s >= self.cfg.dead_feature_window).float().mean() for s in self.since_fired]
        ).cpu()
        means = hist.double().mean(0)  # [n_saes, 5]
        now = time.perf_counter()
        wait_frac = min(1.0, self.data_wait / max(now - self._since, 1e-9))
        self.data_wait, self._since = 0.0, now
        recs = []
        for i, p in enumerate(self.points):
            rec = {"split": "train", "step": self.step, "tokens": self.step * self.cfg.batch_size}
            rec.update({name: float(means[i, j]) for j, name in enumerate(STAT_NAMES)})
            rec["mse"] = rec["mse_loss"] / (self.saes[i].d_in * self.scale**2)  # the held-out "mse"'s unit
            rec["lr"] = p.lr * self.schedule.lr_factor(self.step - 1)
            rec["sparsity_coef"] = (p.sparsity_coef or 0.0) * self.schedule.sparsity_factor(self.step - 1)
            rec["dead_frac"] = float(dead[i])
            rec["data_wait_frac"] = wait_frac  # share of the loop's time spent waiting for batches
            recs.append(rec)
        self.hist_len = 0
        recs = self.par.collect(recs)  # rank 0 writes every SAE's line
        for log, rec in zip(self.logs, recs or [], strict=True):
            log.write(rec)
            log.flush()
        return recs

    def feature_window(self) -> None:
        """End of a feature sampling window: log the fraction of features firing below the threshold."""
        tokens = max(1, self.window_tokens)
        recs = []
        for counts in self.fire_count:
            freq = counts.double() / tokens
            rare = float((freq < self.cfg.dead_feature_threshold).double().mean())
            recs.append(
                {
                    "split": "features",
                    "step": self.step,
                    "tokens": self.step * self.cfg.batch_size,
                    "window_tokens": self.window_tokens,
                    "rare_frac": rare,
                    "mean_log10_freq": float(freq.clamp_min(1e-10).log10().mean()),
                }
            )
            counts.zero_()
        self.window_tokens = 0
        for log, rec in zip(self.logs, self.par.collect(recs) or [], strict=True):
            log.write(rec)

    def evaluate(self, held: HeldOut) -> None:
        if not self.par.evaluates():  # data-parallel: rank 0's replicas are every rank's
            return
        recs = []
        for i, sae in enumerate(self.saes):
            m = heldout_metrics(sae, held, scale=self.scale)
            dead = float((self.since_fired[i] >= self.cfg.dead_feature_window).float().mean())
            recs.append(
                {
                    "split": "heldout",
                    "step": self.step,
                    "tokens": self.step * self.cfg.batch_size,
                    "d_in": sae.d_in,
                    "d_sae": sae.d_sae,
                    "activation_scale": self.scale,
                    **m,
                    "dead_frac": dead,
                    "sequences": held.num_sequences,
                    "heldout_tokens": len(held),
                }
            )
        for log, rec in zip(self.logs, self.par.collect(recs) or [], strict=True):
            log.write(rec)
