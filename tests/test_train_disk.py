"""A disk too small, or one that fills up during a run, on a real small file system (a tmpfs; needs the
right to mount one, else skipped): one line naming the path and the space needed, nothing lost, no temp
files left; the rerun resumes from the last good checkpoint to the run it would have been."""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fastsae.train.checkpoint import load_checkpoint
from fastsae.train.config import TrainConfig
from fastsae.train.resources import checkpoint_bytes, disk_needed
from fastsae.train.run import plan_run
from tests.test_train_checks import base, invoke, one_line_error
from tests.test_train_resume import (
    STEPS,
    assert_same_run,
    cli_args,
    reference,  # noqa: F401  (fixture)
    run_entry,
    steps_in,
    store,  # noqa: F401  (fixture)
)


def mount_tmpfs(path: Path, size: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    return path


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a real file system of that size; unmounted at the end."""
    mounted = []

    def mount(size: str) -> Path:
        mounted.append(mount_tmpfs(tmp_path / f"disk-{len(mounted)}", size))
        return mounted[-1]

    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], check=False)


def fill(disk: Path) -> Path:
    """Writes a file until the disk is full; returns it."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with open(filler, "ab", buffering=0) as f:  # the last partial block
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_a_disk_too_small_is_refused_up_front_naming_the_space(store, small_disk, tmp_path):  # noqa: F811
    disk = small_disk("64k")
    out = disk / "o"
    line = one_line_error(invoke(*base(store, out, "--checkpoint-every", "5")))
    assert line.startswith(f"error: --out {out}: ") and "MB free on its disk, the run needs about" in line, (
        line
    )
    assert "room for two copies of its" in line and "checkpoint" in line
    assert not out.exists()


def test_the_estimate_covers_two_checkpoints_and_the_outputs(store, tmp_path):  # noqa: F811
    # a real run's checkpoint and SAE folders fit in what the up-front check asks for
    cfg = TrainConfig(
        store=str(store), layer=3, out=str(tmp_path / "o"), arch=("jumprelu", "topk"), expansion=(2,), k=(4,),
        tokens=64 * 20, batch_size=64, buffer_tokens=1024, chunk_tokens=64, log_every=5, checkpoint_every=10,
        init_sample_tokens=512, progress=False,
    )  # fmt: skip
    from fastsae.train import trainer

    plan = plan_run(cfg)
    need, ckpt = disk_needed(plan)
    sizes = []
    real = trainer.save_checkpoint

    def measured(path, state):
        real(path, state)
        sizes.append(Path(path).stat().st_size)

    trainer.save_checkpoint = measured
    try:
        trainer.train_saes(cfg)
    finally:
        trainer.save_checkpoint = real
    assert sizes and max(sizes) <= ckpt == checkpoint_bytes(plan)
    outputs = sum(p.stat().st_size for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert outputs + 2 * max(sizes) <= need


@pytest.mark.slow
def test_a_disk_that_fills_up_keeps_the_last_checkpoint_and_resumes(store, reference, small_disk, tmp_path):  # noqa: F811
    disk = small_disk("4m")
    out, log = disk / "out", tmp_path / "steps"
    ckpt = out / "checkpoint.safetensors"
    victim = run_entry(cli_args(store, out), delay=0.1, step_log=log, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.02)
    assert ckpt.exists(), victim.communicate()[1][-2000:]
    filler = fill(disk)  # the disk is full from step ~10 on: metrics lines, the checkpoint of step 20 fail
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith("error: no space left on device writing ") and str(out) in line, line
    assert "MB free, the run needs about" in line and "MB more in --out" in line
    kept = load_checkpoint(ckpt)["step"]
    assert kept in (10, 20) and f"the last good checkpoint (step {kept}) is kept" in line, line
    assert max(steps_in(log)) < STEPS - 1  # it stopped on the full disk, not at the end
    assert temp_files(out) == []

    os.unlink(filler)
    rerun = run_entry(cli_args(store, out), stderr=subprocess.PIPE, text=True)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert f"resuming {out} from step {kept} of {STEPS}" in err
    assert_same_run(out, reference)
    assert temp_files(out) == []
