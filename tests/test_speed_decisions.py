"""The device-dependent speed decisions, branch by branch, on fabricated devices (no GPU needed)."""

from __future__ import annotations

from transferctl.runtime import Device, speed

CPU = Device("CPU", (), None)
GPU = Device("GPU", ("NVIDIA H100",), (9, 0))
OLD_GPU = Device("GPU", ("Tesla K80",), (3, 7))


def test_jit_compile_off_on_cpu() -> None:
    assert speed.jit_compile(CPU, distributed=False) is False
    assert speed.jit_compile(CPU, distributed=True) is False


def test_jit_compile_off_under_tf_distribute() -> None:
    assert speed.jit_compile(GPU, distributed=True) is False


def test_jit_compile_off_on_one_gpu_as_keras_auto() -> None:
    assert speed.jit_compile(GPU, distributed=False) is False
    assert speed.jit_compile(OLD_GPU, distributed=False) is False


def test_prefetch_nothing_on_cpu() -> None:
    assert speed.prefetch_device(CPU, distributed=False) is None
    assert speed.prefetch_device(CPU, distributed=True) is None


def test_prefetch_to_the_gpu_on_one_gpu() -> None:
    assert speed.prefetch_device(GPU, distributed=False) == "/gpu:0"
    assert speed.prefetch_device(OLD_GPU, distributed=False) == "/gpu:0"


def test_prefetch_nothing_under_tf_distribute() -> None:
    assert speed.prefetch_device(GPU, distributed=True) is None


def test_prefetch_nothing_with_class_weights() -> None:
    assert speed.prefetch_device(GPU, distributed=False, class_weighted=True) is None


def test_feed_leaves_a_cpu_dataset_as_it_is() -> None:
    dataset = object()  # on CPU nothing is applied, so any object comes back unchanged
    assert speed.feed(dataset, CPU, distributed=False) is dataset
