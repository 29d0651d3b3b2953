"""The measurement protocols in-process: timing against a workload of known duration, the steady
protocol's stopping rules, deterministic tensor-byte counting, OOM classification, RSS probing."""

from __future__ import annotations

import mmap
import time

import pytest
import torch
from torch import nn

from bench.measure.memory import LiveTensorBytes, RssProbe, is_oom, measure_tensor_bytes, model_tensors
from bench.measure.protocol_settings import PaperConfig, SteadyConfig
from bench.measure.protocols import measure_paper, measure_steady
from bench.measure.timing import make_timer, summarize, time_steady
from models import create_model

SLEEP_S = 0.050
# A sleep never returns early; the scheduler of a loaded 2-core machine can make it late.
TOLERANCE_S = (0.045, 0.080)


class Sleeper(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        time.sleep(SLEEP_S)
        return x.sum()


def by(metrics, name, stat):
    return [m for m in metrics if m.name == name and m.stat == stat]


def test_steady_latency_of_a_known_duration():
    cfg = SteadyConfig(min_repeats=10, min_time_s=0.0, max_time_s=5.0)
    m = measure_steady(Sleeper, lambda: torch.zeros(1, 8), device="cpu", batch=1, n_tokens=8, cfg=cfg)
    (median,) = by(m.metrics, "latency_s", "median")
    assert TOLERANCE_S[0] <= median.value <= TOLERANCE_S[1]
    assert median.n_samples >= 10 and median.method == "perf_counter"
    assert len(m.samples["samples_s"]) == median.n_samples
    assert all(s >= SLEEP_S for s in m.samples["samples_s"])
    (cold,) = by(m.metrics, "latency_cold_s", "value")
    assert cold.value >= SLEEP_S
    (tput,) = by(m.metrics, "throughput_tokens_per_s", "median")
    assert tput.value == pytest.approx(1 * 8 / median.value)
    assert {s for x in m.metrics if x.name == "latency_s" for s in [x.stat]} >= {"median", "iqr", "p10", "p90"}
    assert by(m.metrics, "peak_mem_bytes", "cpu_rss") and by(m.metrics, "peak_mem_bytes", "tensor_bytes")


def test_paper_latency_of_a_known_duration():
    builds = []

    def build():
        builds.append(1)
        return Sleeper()

    m = measure_paper(build, lambda: torch.zeros(1, 8), device="cpu", batch=1, n_tokens=8, cfg=PaperConfig(runs=3))
    (mean,) = by(m.metrics, "latency_s", "mean")
    assert TOLERANCE_S[0] <= mean.value <= TOLERANCE_S[1] and mean.n_samples == 3
    assert len(builds) == 3  # a fresh model per run
    (cold,) = by(m.metrics, "latency_cold_s", "value")
    assert len(m.samples["runs_s"]) == 3 and m.samples["runs_s"][0] == cold.value
    assert by(m.metrics, "throughput_tokens_per_s", "mean")


def test_steady_stopping_rules():
    timer, _ = make_timer("cpu")
    fast = time_steady(lambda: None, SteadyConfig(warmup_min=3, min_repeats=10, max_repeats=40, min_time_s=0.0),
                       timer)
    assert len(fast.warmup_s) >= 3 and 10 <= len(fast.samples_s) <= 40
    capped = time_steady(lambda: None, SteadyConfig(min_repeats=1, max_repeats=7, min_time_s=60.0), timer)
    assert len(capped.samples_s) == 7 and capped.timed_stop == "max_repeats"
    slow = time_steady(lambda: time.sleep(SLEEP_S), SteadyConfig(min_repeats=10, max_time_s=0.12), timer)
    assert 1 <= len(slow.samples_s) < 10 and slow.timed_stop == "max_time_s"
    assert slow.warmup_stop == "max_time_s"


def test_summary_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0 and s["iqr"] == 2.0
    assert s["p10"] == pytest.approx(1.4) and s["p90"] == pytest.approx(4.6)


def test_tensor_bytes_known_value():
    model = nn.Linear(1000, 1000, bias=False)  # 4,000,000 bytes of weights
    x = torch.randn(10, 1000)  # 40,000 bytes
    with torch.inference_mode():
        base, peak = measure_tensor_bytes(lambda: model(x), model_tensors(model, x))
    assert base == 4_040_000
    assert peak == base + 40_000  # the output; no other tensor outlives the matmul


def test_tensor_bytes_frees_and_counts_views_once():
    tracker = LiveTensorBytes()
    with torch.inference_mode(), tracker:
        a = torch.empty(1000)  # 4,000 bytes
        v = a[10:]  # a view: same storage, not counted again
        b = torch.empty(500)  # 2,000 bytes
        del a, v, b
        c = torch.empty(250)  # 1,000 bytes
    assert tracker.peak == 6_000 and tracker.live == 1_000
    del c


def test_tensor_bytes_is_deterministic_on_real_models():
    """Same value twice. After a first call, as the protocols measure it: a process's first forward
    may create process-lifetime caches (the scan extension's), which would count once."""
    for name, opts in (("test_ssast", {"attn_impl": "eager"}), ("test_ssamba", {})):
        model = create_model(name, input_frames=256, **opts).eval()
        x = torch.randn(1, 256, 128)
        with torch.inference_mode():
            model(x)
            first = measure_tensor_bytes(lambda: model(x), model_tensors(model, x))
            second = measure_tensor_bytes(lambda: model(x), model_tensors(model, x))
        assert first == second
        weights = sum(t.numel() * t.element_size() for t in model_tensors(model, x))
        assert first[0] == weights and first[1] > first[0]


def test_eager_attention_counts_its_score_buffers():
    """At N tokens eager attention keeps B*H*N^2 fp32 scores and probabilities: SDPA does not."""
    n, frames = 512, 1024
    peaks = {}
    for impl in ("eager", "sdpa"):
        model = create_model("test_ssast", input_frames=frames, attn_impl=impl).eval()
        x = torch.randn(1, frames, 128)
        with torch.inference_mode():
            peaks[impl] = measure_tensor_bytes(lambda: model(x), model_tensors(model, x))[1]
    heads, n_all = 2, n + 2
    assert peaks["eager"] - peaks["sdpa"] >= heads * n_all * n_all * 4  # at least one N x N buffer per head


def test_oom_classification():
    assert is_oom(MemoryError())
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_rss_probe_sees_a_fresh_allocation():
    """Fresh anonymous pages, touched, then unmapped: the peak (not the end state) is what is read.
    (mmap, not a tensor: malloc may hand out pages a long-lived process already has resident.)"""
    probe = RssProbe()
    sink = []
    size = 64 * 2**20
    with probe.window(sink):
        block = mmap.mmap(-1, size)
        block.write(b"\x01" * size)
        block.close()
    (peak,) = [m for m in sink if m.stat == "cpu_rss" and m.name == "peak_mem_bytes"]
    (base,) = [m for m in sink if m.stat == "cpu_rss" and m.name == "base_mem_bytes"]
    assert peak.value - base.value >= 60 * 2**20
    assert peak.method == probe.method


def test_cuda_memory_cap_names_a_device_index(monkeypatch):
    # torch.cuda.set_per_process_memory_fraction rejects a bare "cuda" device (found on an H100:
    # every case of the first GPU run failed with it); the cap must pass an indexed device.
    from bench.measure.memory import apply_cuda_memory_cap

    calls = []

    class Props:
        total_memory = 80 * 2**30

    def set_fraction(fraction, device):
        if torch.device(device).index is None:
            raise ValueError("Expected a torch.device with a specified index or an integer")
        calls.append((fraction, torch.device(device)))

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_fraction)
    apply_cuda_memory_cap("cuda", 48 * 2**30)
    apply_cuda_memory_cap("cuda:0", 160 * 2**30)
    apply_cuda_memory_cap("cpu", 48 * 2**30)  # not a CUDA device: no cap through CUDA
    assert calls == [(0.6, torch.device("cuda", 0)), (1.0, torch.device("cuda", 0))]
