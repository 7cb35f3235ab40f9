"""`fastsae judge FOLDER --endpoint URL --model NAME`: the typer command. Its options mirror JudgeConfig field
for field (help and default from the field; tests/test_cli_options.py checks both).

Bad input raises (JudgeInputError, FeatureArtifactError, ModelLoadError, ...: all FastSAEError); an endpoint
that fails --max-failures requests in a row raises EndpointError after what was scored is written;
fastsae/cli.py prints either as one line and exits 2."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from fastsae.interp.judge_config import JudgeConfig
from fastsae.options import ConfigFields

F = ConfigFields(JudgeConfig)
_o, _c, _d = F.option, F.count, F.default


def to_config(values: dict) -> JudgeConfig:
    """The command's option values -> a validated JudgeConfig."""
    return JudgeConfig(**{name: values[name] for name in F.by_name})


def judge_cmd(
    folder: Annotated[str, typer.Argument(help=F.help("folder"))],
    endpoint: Annotated[str, _o("endpoint")],
    model: Annotated[str, _o("model")],
    features: Annotated[int, _c("features")] = _d("features"),
    seed: Annotated[int, _o("seed")] = _d("seed"),
    detection: Annotated[int, _c("detection")] = _d("detection"),
    api_key_env: Annotated[str, _o("api_key_env")] = _d("api_key_env"),
    concurrency: Annotated[int, _c("concurrency")] = _d("concurrency"),
    timeout: Annotated[float, _o("timeout")] = _d("timeout"),
    max_retries: Annotated[int, _c("max_retries")] = _d("max_retries"),
    max_failures: Annotated[int, _c("max_failures")] = _d("max_failures"),
    parse_retries: Annotated[int, _c("parse_retries")] = _d("parse_retries"),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
) -> None:
    """Score a sample of features with an LLM judge: description, 1-5 score, detection accuracy and F1."""
    cfg = to_config({k: v for k, v in locals().items() if k in F.by_name})
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep
    from rich.console import Console

    from fastsae.interp.judge import run_judge
    from fastsae.interp.judge_report import PLOT_FILE, ROWS_FILE, SUMMARY_FILE, print_summary

    summary = run_judge(cfg)
    print_summary(summary, Console())
    Console(stderr=True).print(
        f"saved {summary['features_folder']}/{ROWS_FILE}, {SUMMARY_FILE} and {PLOT_FILE}", highlight=False
    )
