"""What a run checks in the numbers it reads and computes, and how it names the cause of a failure.

Inputs. Every training batch, the init sample and the held-out tokens must be finite with |x| <=
fastsae.store.MAX_ABS_ACTIVATION, the bound `fastsae verify` checks. A value beyond it is store damage, not
data: the run stops with a StoreCorruptError naming the shard and sequence of the first bad value of the
layer (fastsae.store.find_bad_activation, a full read of that layer, done only then).

Divergence. Each SAE's reference is max(its MSE at step 0, the mean ‖x‖² of the first batch), both in
training units (an MSE over the reference is worse than reconstructing 0). A step whose MSE exceeds
DIVERGENCE_FACTOR × the reference, or a non-finite loss on inputs that passed the check above, stops the run
(DivergedError, NonFiniteError) naming the step, the SAE and the learning rate as the likely cause.

The checks run where the trainer already syncs (every --log-every steps, before each eval and checkpoint),
so a checkpoint is only written after them.
"""

from __future__ import annotations

import logging
import math

import torch

from fastsae.store import MAX_ABS_ACTIVATION, StoreCorruptError, find_bad_activation
from fastsae.train.config import TrainError

logger = logging.getLogger(__name__)

DIVERGENCE_FACTOR = 1e3
SCAN_NOTICE_BYTES = 2**30  # looking for a bad value in a layer larger than this is announced first


class NonFiniteError(TrainError, FloatingPointError):
    """NaN/inf in a loss; the message names the step (and the SAE)."""

    exit_code = 1  # a run that failed on input that passed every check: not a usage error


class DivergedError(NonFiniteError):
    """A loss past the divergence bound (see the module doc)."""


def inputs_ok(x: torch.Tensor) -> torch.Tensor:
    """A device bool: every value of x finite and within the store's bound (no host sync)."""
    return torch.linalg.vector_norm(x, ord=math.inf) <= MAX_ABS_ACTIVATION  # NaN compares False


def check_inputs(x: torch.Tensor, store, layer: int, what: str) -> None:
    """Raises bad_input_error(...) when x holds a value inputs_ok refuses (one host sync)."""
    if x.numel() and not bool(inputs_ok(x)):
        raise bad_input_error(store, layer, what)


def bad_input_error(store, layer: int, what: str) -> Exception:
    """The error for a non-finite or absurd input value met in ``what``: where the store holds it."""
    if store.num_tokens * store.d_model * 4 > SCAN_NOTICE_BYTES:  # a long read: say why the run pauses
        logger.info(f"{what} holds a bad activation: looking for it in layer {layer} of store {store.location}")
    bad = find_bad_activation(store, layer)
    if bad is None:  # not in the store as read now: changed while training, or not the store's doing
        return NonFiniteError(
            f"{what} holds a non-finite activation or one beyond |x| <= {MAX_ABS_ACTIVATION:g}, but layer "
            f"{layer} of store {store.location} has none now (did it change during the run?)"
        )
    return StoreCorruptError(
        f"store {store.location}: {bad}, met in {what}: the store is damaged (activations are finite with |x| <= "
        f"{MAX_ABS_ACTIVATION:g}); `fastsae verify {store.location}` checks every value"
    )


def references(first_mse: torch.Tensor, energy: float) -> list[float]:
    """Per SAE: max(its MSE at step 0, the first batch's mean ‖x‖²) (training units)."""
    return [max(float(m), energy) for m in first_mse]


def check_losses(hist: torch.Tensor, first_step: int, refs: list[float] | None, points) -> None:
    """hist [n_steps, n_saes, (loss, mse_loss, ...)] of the steps first_step.. (host copy): raises for the
    earliest step with a non-finite value, or an MSE past DIVERGENCE_FACTOR × its SAE's reference."""
    bad = ~torch.isfinite(hist).all(-1)  # [n, n_saes]
    if refs is not None:
        bound = torch.tensor(refs, dtype=hist.dtype) * DIVERGENCE_FACTOR
        bad |= hist[:, :, 1] > bound
    if not bool(bad.any()):
        return
    j, i = bad.nonzero()[0].tolist()
    p, step = points[i], first_step + j
    cause = f"the likely cause is the learning rate (--lr {p.lr:g} for this SAE): lower it"
    if not bool(torch.isfinite(hist[j, i]).all()):
        raise NonFiniteError(
            f"non-finite loss (NaN/inf) at step {step} in SAE {p.name}, on inputs that are finite and within "
            f"|x| <= {MAX_ABS_ACTIVATION:g}: the training diverged; {cause}"
        )
    raise DivergedError(
        f"training diverged at step {step} in SAE {p.name}: its MSE {float(hist[j, i, 1]):.3g} is over "
        f"{DIVERGENCE_FACTOR:,.0f} × its initial {refs[i]:.3g} (training units); {cause}"
    )
