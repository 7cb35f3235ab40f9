"""fastsae.lm.devices: pick_device (clear one-line errors, torchrun's LOCAL_RANK) and the thread policy."""

from __future__ import annotations

import pytest
import torch

from fastsae.errors import FastSAEError, ResourceError, UsageError
from fastsae.lm import available_cores, local_rank, pick_device, set_threads

NO_CUDA = not torch.cuda.is_available()


def test_cpu_and_auto(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert pick_device("cpu") == torch.device("cpu")
    want = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert pick_device("auto") == want and pick_device() == want


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_resource_error():
    for name in ("cuda", "cuda:0", " cuda "):
        with pytest.raises(ResourceError, match="no CUDA device") as e:
            pick_device(name)
        assert isinstance(e.value, OSError) and "\n" not in str(e.value)


def test_unknown_device_is_a_usage_error():
    for name in ("foo", "cuda:x", "gpu", "meta"):
        with pytest.raises(UsageError, match="use auto, cpu, cuda or cuda:N") as e:
            pick_device(name)
        assert isinstance(e.value, FastSAEError) and isinstance(e.value, ValueError)
        assert "\n" not in str(e.value)


def test_local_rank_picks_the_ranks_gpu(monkeypatch):
    # A CPU machine cannot run torchrun on GPUs: pretend torch sees 2 CUDA devices (device objects only)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_rank() == 1
    assert pick_device("auto") == pick_device("cuda") == torch.device("cuda", 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ResourceError, match="2 CUDA device"):
        pick_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(UsageError, match="LOCAL_RANK"):
        pick_device("auto")


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_cuda_when_present(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert pick_device("auto").type == "cuda" and pick_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert pick_device("cuda") == torch.device("cuda", 0)


def test_threads_are_this_process_share_of_its_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        assert set_threads(0, "cpu") == available_cores() == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * available_cores()))
        assert set_threads(0, torch.device("cpu")) == 1  # never below one thread
        assert set_threads(3, "cpu") == 3 == torch.get_num_threads()
        assert set_threads(5, "cuda") == 3  # left alone on a GPU
    finally:
        torch.set_num_threads(before)


def test_cli_device_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from fastsae.cli import app

    for device, word in (("foo", "not a torch device"), ("cuda", "no CUDA device")):
        if word == "no CUDA device" and not NO_CUDA:
            continue
        res = CliRunner().invoke(app, ["harvest", "--out", str(tmp_path / device), "--device", device])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], res.output
