"""Where a training process runs: alone on the CPU or one GPU, or as one of several processes that torchrun
started (DDP: NCCL between GPUs, gloo between CPU processes). torchrun's RANK / WORLD_SIZE / LOCAL_RANK
say which; without them the process is alone.

Precision: `auto` is bf16 on a GPU and fp32 on the CPU. In bf16 and fp16 the frozen base weights are stored
in that type and the forward pass runs under autocast; peft keeps the LoRA weights in fp32 either way, and
fp16 scales the loss (GradScaler) so small gradients do not underflow.

Worker-only: torch is imported inside the functions (the module must import light, see ml/training/__init__).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class Devices:
    rank: int  # this process among `world`; rank 0 writes every file and reports progress
    world: int
    device: Any  # torch.device
    dtype: Any  # torch dtype of the frozen base weights
    autocast_dtype: Any  # torch dtype of the forward pass, None for plain fp32
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        import torch  # worker-only

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def put(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch on this process's device: ids stay integers, the frames take the weights' dtype."""
        return {key: value.to(self.device, dtype=self.dtype if key == "pixel_values" else None)
                for key, value in batch.items()}

    def agree(self, flag: bool) -> bool:
        """True on every process when it is True on any: stopping is decided together or not at all."""
        if not self.distributed:
            return flag
        import torch  # worker-only
        import torch.distributed as dist

        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes (the reported training loss)."""
        if not self.distributed:
            return value
        import torch  # worker-only
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.world

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every process (what `train` returns everywhere)."""
        if not self.distributed:
            return value
        import torch.distributed as dist  # worker-only

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist  # worker-only

            dist.barrier()

    def close(self) -> None:
        if self.owns_process_group:
            import torch.distributed as dist  # worker-only

            dist.destroy_process_group()


def setup_devices(precision: str) -> Devices:
    import torch  # worker-only
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        # Rank 0 evaluates while the others wait at a barrier: allow a long evaluation.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
        owns = True
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    return Devices(rank, world, device, dtype, None if dtype == torch.float32 else dtype, owns)
