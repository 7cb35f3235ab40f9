"""Sweeps: the SAEs one run trains in ONE pass over the data.

--arch, --expansion, --sparsity-coef, --k and --lr take comma-separated values; the run trains the cartesian
product. The sparsity axis depends on the architecture: standard and jumprelu combine with every
--sparsity-coef value (default: the recipe's coefficient for that architecture), topk and batchtopk with
every --k value instead. So `--arch jumprelu,topk --expansion 8,16 --sparsity-coef 0.003,0.01 --k 32` trains
2×2 jumprelu + 2×1 topk = 6 SAEs. Each SAE's folder is named from its point (`jumprelu-x16-sc0.01`,
`topk-x8-k32`, plus `-lr7e-05` when --lr is swept).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastsae.train.errors import fail

if TYPE_CHECKING:
    from fastsae.train.config import TrainConfig

ARCHS = ("standard", "jumprelu", "topk", "batchtopk")
SPARSITY_ARCHS = ("standard", "jumprelu")  # trained with a sparsity coefficient λ
K_ARCHS = ("topk", "batchtopk")  # sparsity set by k
DEFAULT_SPARSITY_COEF = {"jumprelu": 0.01, "standard": 5.0}  # paper, both recipes
DEFAULT_K = 64


@dataclass(frozen=True)
class SweepPoint:
    """One SAE of a sweep: its architecture, size, sparsity setting and peak lr."""

    arch: str
    expansion: int
    sparsity_coef: float | None  # standard / jumprelu
    k: int | None  # topk / batchtopk
    lr: float
    name: str


def _fmt(x: float) -> str:
    return f"{x:g}"


def sweep_points(cfg: TrainConfig) -> list[SweepPoint]:
    """The SAEs a resolved config trains, in a stable order (see the module doc for how axes combine)."""
    points = []
    for arch, expansion, lr in itertools.product(cfg.arch, cfg.expansion, cfg.lr):
        if arch in SPARSITY_ARCHS:
            # defaults are per architecture: jumprelu 0.01, standard 5 (not crossed with each other)
            coefs = cfg.sparsity_coef if cfg.sparsity_coef is not None else (DEFAULT_SPARSITY_COEF[arch],)
            settings = [(sc, None, f"sc{_fmt(sc)}") for sc in coefs]
        else:
            settings = [(None, k, f"k{k}") for k in (cfg.k or (DEFAULT_K,))]
        for sc, k, tag in settings:
            name = f"{arch}-x{expansion}-{tag}" + (f"-lr{_fmt(lr)}" if len(cfg.lr) > 1 else "")
            points.append(SweepPoint(arch=arch, expansion=expansion, sparsity_coef=sc, k=k, lr=lr, name=name))
    names = [p.name for p in points]
    if len(set(names)) != len(names):  # values equal to 6 significant digits would share (overwrite) a folder
        twice = sorted({n for n in names if names.count(n) > 1})
        fail(f"two SAEs of the sweep would share the folder {twice[0]}; make the swept values differ more")
    return points
