"""Device resolution, autocast, threads, determinism and the CUDA out-of-memory → CPU fallback."""

from __future__ import annotations

import pytest
import torch

from brainparc.inference.devices import autocast, deterministic, resolve_device, run_with_cpu_fallback, set_threads
from brainparc.inference.sliding_window import sliding_window
from tests.inference.fakes import centre

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


@no_cuda
def test_auto_is_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_spellings(spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "", "cuda:-1", "mps", "auto:1"])
def test_bad_device_strings(spec):
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device(spec)


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_unavailable_is_a_clear_error(spec):
    with pytest.raises(ValueError, match=r"CUDA is not available.*--device cpu"):
        resolve_device(spec)


def test_autocast_off_on_cpu_unless_asked():
    a = torch.randn(4, 4)
    with autocast("cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", enabled=True):
        assert (a @ a).dtype == torch.bfloat16


def test_set_threads_roundtrip():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == before
        assert torch.get_num_threads() == 1
        assert set_threads(None) == 1 and set_threads(0) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        set_threads(-2)


def test_deterministic_context_restores():
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_oom_on_fake_cuda_falls_back_to_cpu():
    """The first (fake GPU) attempt raises OutOfMemoryError inside predict; the rerun on CPU gives the right answer."""
    image = torch.rand((1, 30, 21, 17))
    devices = []

    def attempt(dev: torch.device):
        devices.append(dev.type)

        def predict(x):
            if dev.type == "cuda":  # the fake GPU path: nothing here touches a real GPU
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return (centre(x, 24, 16),)

        return sliding_window(predict, image, patch_size=24, valid_size=16, accum_dtype=torch.float32)

    with pytest.warns(RuntimeWarning, match="out of memory.*rerunning on the CPU"):
        (out,) = run_with_cpu_fallback(attempt, torch.device("cuda"))
    assert devices == ["cuda", "cpu"]
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_other_errors_and_cpu_oom_propagate():
    def runtime_error(dev):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_cpu_fallback(runtime_error, torch.device("cuda"))

    def oom(dev):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_cpu_fallback(oom, torch.device("cpu"))
