"""The `ipc` weight sync (GPU engines colocated with the learner on one node): CUDA IPC handles
of the learner's tensors, opened by the engines' workers (vLLM's `IPCWeightTransferEngine`)."""

from __future__ import annotations

from amray.weight_sync.vllm_transfer import VLLMTransfer, start_trainer


class IPCTransfer(VLLMTransfer):
    name = "ipc"


def trainer_side(model, engines: list, master_addr: str, master_port: int, engine_ranks: int, rank: int):
    """Learner side, in every rank (no rendezvous: the handles travel through Ray)."""
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

    return start_trainer(IPCTrainerInitInfo(rank=rank), model, engines)
