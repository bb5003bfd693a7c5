"""Which device and arithmetic a run uses, resolved once from `train.device` and `train.precision`."""

import contextlib
import time

import torch
from torch import nn

from sel.core.errors import SelError


def resolve_device(spec: str) -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SelError(f"params: train.device = {spec!r}: no CUDA device is available "
                           f"(use auto or cpu)")
        if (device.index or 0) >= torch.cuda.device_count():
            raise SelError(f"params: train.device = {spec!r}: only {torch.cuda.device_count()} "
                           f"CUDA device(s) here")
    return device


def native_bf16(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(spec: str, device: torch.device) -> str:
    """`auto` is bf16 autocast where the hardware has bf16, fp32 elsewhere."""
    if spec == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return spec


def resolve_compile(spec: str | bool, device: torch.device) -> bool:
    """`auto` is off: it did not pay where measured. On a 2-core AVX-512 CPU the training step was
    no faster (width 64: 175 vs 174 img/s) or slower (width 16: 1244 vs 1488 img/s) after 10-25 s
    of compiling; on an H200 at width 64 the dense step gained 15% and the SEL step lost 21%."""
    return spec is True


def resolve_cuda_graphs(spec: str | bool, device: torch.device, compiled: bool) -> bool:
    """`auto` is on for CUDA (the step replayed from a captured graph: see sel/train/graphs.py) unless
    torch.compile is on, which captures in its own way; off elsewhere."""
    if spec == "auto":
        return device.type == "cuda" and not compiled
    if spec and compiled:
        raise SelError("params: train.cuda_graphs = true and train.compile = true: choose one "
                       "(torch.compile's mode reduce-overhead captures graphs itself)")
    if spec and device.type != "cuda":
        raise SelError(f"params: train.cuda_graphs = true needs a CUDA device (train.device "
                       f"resolves to {device})")
    return spec


def memory_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last (NHWC), where convolutions run faster (a training step, fp32: width 64 on a
    2-core AVX-512 CPU 109 vs 86 img/s, width 16 on a 2-core AVX2 CPU 272 vs 224), except on a
    CPU for a model with a strided 1x1 convolution of fewer than 16 input channels (width < 16):
    oneDNN's NHWC backward-weights kernel for it writes past its workspace when the input
    channels are fewer than its block (8 with AVX2, 16 with AVX-512), and hangs, crashes or
    returns wrong gradients (uxlfoundation/oneDNN#6035; seen here at width 4 on an AVX2 CPU)."""
    narrow = any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                 and m.in_channels < 16 for m in model.modules())
    return torch.contiguous_format if device.type == "cpu" and narrow else torch.channels_last


def exact_fp32(device: torch.device) -> None:
    """fp32 means fp32: CUDA would otherwise run convolutions in TF32 (10-bit mantissa). The
    switches are process-wide: whatever runs after in the process runs without TF32 too."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


# What a fresh PyTorch process computes fp32 with on CUDA: TF32 in cuDNN's convolutions, exact
# fp32 in matmuls (tests/test_bench.py checks these against a fresh process).
PYTORCH_DEFAULT_MATH = {"cudnn_allow_tf32": True, "matmul_allow_tf32": False,
                        "float32_matmul_precision": "highest"}


def math_settings() -> dict:
    """The process-wide switches that decide how fp32 arithmetic runs on CUDA (TF32 or not)."""
    return {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def _set_math(settings: dict) -> None:
    torch.backends.cudnn.allow_tf32 = settings["cudnn_allow_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = settings["matmul_allow_tf32"]
    torch.set_float32_matmul_precision(settings["float32_matmul_precision"])  # after: it wins


@contextlib.contextmanager
def default_math():
    """PyTorch's default math for the block, whatever ran before set (an fp32 Trainer's
    `exact_fp32`); the settings from before come back after, so what the block sets stays in it."""
    before = math_settings()
    _set_math(PYTORCH_DEFAULT_MATH)
    try:
        yield
    finally:
        _set_math(before)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for forward passes, or nothing for fp32. Without autocast's weight cache,
    which a CUDA graph capture cannot hold and a training step does not reuse (each weight is
    cast once per forward pass)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


class Stopwatch:
    """Seconds between `start` and `stop` of the work queued on `device`, with no sync of its
    own: on CUDA two events on the stream, read once the epoch's one read back has waited for
    them; on the CPU, which runs the work as it is queued, the host's clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self.marks = [self._mark()]

    def stop(self) -> None:
        self.marks.append(self._mark())

    def resume(self) -> None:
        """Go on after a `stop`: the pause between them is not counted (evaluation mid-epoch)."""
        self.marks.append(self._mark())

    def seconds(self) -> float:
        """The counted seconds: the sum over each start (or resume) to its stop."""
        pairs = zip(self.marks[0::2], self.marks[1::2])
        return sum(begin.elapsed_time(end) / 1000 if self.cuda else end - begin for begin, end in pairs)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
