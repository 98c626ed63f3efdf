"""The `nccl` weight sync (GPU engines on any node): learner rank 0 broadcasts every parameter
over an NCCL group it shares with every engine's workers (vLLM's `NCCLWeightTransferEngine`)."""

from __future__ import annotations

from amray.weight_sync.vllm_transfer import VLLMTransfer, start_trainer


class NCCLTransfer(VLLMTransfer):
    name = "nccl"


def trainer_side(model, engines: list, master_addr: str, master_port: int, engine_ranks: int, rank: int):
    """Learner side, in every rank: the group is the sender plus every engine rank (engines x
    tensor-parallel size)."""
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    return start_trainer(NCCLTrainerInitInfo(master_addr, master_port, 1 + engine_ranks, rank=rank), model, engines)
