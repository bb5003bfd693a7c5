"""The training step as a CUDA graph: captured once per update rule, replayed for every full batch.

At the protocol's batch of 64 an eager step on a GPU is bound by launching kernels from Python;
one H200 ran the project's step 3.3-4.6x faster replayed from a captured graph (issue 11's probe).
The graph replays the very function the eager loop calls, on fixed input buffers: each batch's
images and labels are drawn eagerly, from the same generator as without graphs, and copied in.
A replay reads the tensors the capture saw, so everything the step reads sits at a fixed address
(`Trainer`: gamma and the step index are device tensors, fused Adam keeps lr and step count on the
device), and whatever replaces those tensors (a new optimizer, a resumed state) calls `reset`.
"""

import contextlib

import torch

WARMUP_STEPS = 3  # eager steps per rule before its capture: cuDNN picks algorithms, Adam builds state


def capture(step):
    """Record `step`'s kernels into a CUDA graph without running them; `replay()` runs them."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


@contextlib.contextmanager
def side_stream(device: torch.device):
    """Warm-up steps run on a side stream, as capture requires (CUDA); elsewhere in place."""
    if device.type != "cuda":
        yield
        return
    main = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(main)
    with torch.cuda.stream(stream):
        yield
    main.wait_stream(stream)


class StepGraphs:
    """`step(x, y, rule)` served from one graph per `rule` (a hashable description of the update),
    each for batches of one fixed shape (a selecting rule forwards more candidates per step)."""

    def __init__(self, step, device: torch.device):
        self.step, self.device = step, device
        self.inputs = {}  # rule -> its fixed (x, y) buffers
        self.graphs, self.warm = {}, {}

    def reset(self) -> None:
        """Forget every graph: the tensors they were captured with are no longer the live ones."""
        self.graphs.clear()
        self.warm.clear()

    def run(self, x: torch.Tensor, y: torch.Tensor, rule) -> None:
        if rule not in self.inputs:
            self.inputs[rule] = torch.empty_like(x), torch.empty_like(y)
        fixed_x, fixed_y = self.inputs[rule]
        fixed_x.copy_(x)
        fixed_y.copy_(y)
        graph = self.graphs.get(rule)
        if graph is None:
            if self.warm.get(rule, 0) < WARMUP_STEPS:
                self.warm[rule] = self.warm.get(rule, 0) + 1
                with side_stream(self.device):
                    self.step(fixed_x, fixed_y, rule)
                return
            graph = self.graphs[rule] = capture(lambda: self.step(fixed_x, fixed_y, rule))
        graph.replay()
