"""What the `nccl` and `ipc` backends share: vLLM's own weight-transfer engines
(`vllm.distributed.weight_transfer`). The learner's rank 0 is the sender (the other ranks only
join FSDP's all-gather of each parameter); each engine receives through vLLM's protocol.
"""

from __future__ import annotations

import time

from amray.weight_sync import WeightTransfer


class VLLMTransfer(WeightTransfer):
    """Driver side: set the transfer up once, then per sync: learners send, engines take the version."""

    def __init__(self, learners, engines, timeout_s: float) -> None:
        super().__init__(learners, engines, timeout_s)
        self.wait(learners.init_weight_transfer(self.name, engines.actors, engines.ranks), f"{self.name} transfer setup")

    def send(self, version: int) -> dict[str, float]:
        t0 = time.perf_counter()
        self.wait(self.learners.send_weights(), f"{self.name} weight sync to version {version}")
        self.wait(self.engines.update_weight_version(version), f"weight version {version} on the engines")
        return {"sync_s": time.perf_counter() - t0, "sync_gather_s": 0.0}


def start_trainer(info, model, engines: list):
    """Learner side (inside a rank): vLLM's trainer-side transfer over `model`'s parameters,
    from the backend's init info (nccl.trainer_side / ipc.trainer_side)."""
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.clients import RayVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    return WeightTransferTrainerFactory.trainer_init(info, client=RayVLLMWeightSyncClient(engines),
                                                     source=ModuleSource(model))


class VLLMTransferEngineSide:
    """The engine actor's half (inherited by it; `self.llm` is its AsyncLLM): vLLM's protocol,
    driven by the learner's sender rank through `RayVLLMWeightSyncClient`."""

    async def init_weight_transfer_engine(self, request) -> None:
        await self.llm.init_weight_transfer_engine(request)

    async def start_weight_update(self) -> None:
        await self.llm.start_weight_update()

    async def update_weights(self, request) -> None:
        await self.llm.update_weights(request)

    async def finish_weight_update(self) -> None:
        await self.llm.finish_weight_update()
        await self.llm.reset_prefix_cache()

    async def update_weight_version(self, version: str | int) -> int:
        await self.llm.update_weight_version(str(version))
        self.version = int(version)
        return self.version
