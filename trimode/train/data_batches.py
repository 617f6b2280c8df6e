"""Endless, exactly resumable global batches, sharded across data-parallel ranks.

Epoch e visits the sequences in the order ``torch.randperm(N)`` drawn from a generator seeded with
``seed + e``; global batch b of the epoch is ``order[b*B:(b+1)*B]`` and rank r takes rows
``[r*B/W, (r+1)*B/W)`` of it. The state is only (epoch, position in global batches), so a run
resumes exactly, also with a different number of ranks, as long as the data (a fingerprint of the
packed tokens), global batch and seed are the same (checked on load).

``drop_last=True`` skips the last ``N mod B`` sequences of each epoch's order (different ones each
epoch); ``drop_last=False`` fills the last batch from the start of the same epoch's order, so
every sequence is seen at least once per epoch and every batch has the same shape.
"""

from __future__ import annotations

from typing import Any

import torch


class Batches:
    def __init__(
        self, dataset: Any, global_batch: int, seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = True
    ) -> None:
        n = len(dataset)
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if global_batch % world_size:
            raise ValueError(f"global_batch {global_batch} is not divisible by world_size {world_size}")
        if n == 0:
            raise ValueError("the dataset is empty")
        if drop_last and n < global_batch:
            raise ValueError(
                f"the dataset has {n} sequences, fewer than one global batch of {global_batch} "
                "(use a smaller batch, more data, or drop_last=False)"
            )
        self.dataset, self.global_batch, self.seed = dataset, global_batch, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.position = 0  # global batches already taken in this epoch
        self._order: torch.Tensor | None = None  # the permutation of self.epoch, drawn lazily

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.dataset)
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        indices = self.global_indices()[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        self.position += 1
        items = [self.dataset[int(i)] for i in indices]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        batch["index"] = indices.clone()  # which sequences: per-sequence caches (the drafter's teacher store) key on it
        return batch

    def global_indices(self) -> torch.Tensor:
        """Dataset indices of the next global batch (all ranks), without advancing."""
        if self.position >= self.batches_per_epoch:  # the next batch opens the next epoch
            order, start = self._order_of(self.epoch + 1), 0
        else:
            order, start = self._epoch_order(), self.position * self.global_batch
        chunk = order[start : start + self.global_batch]
        if len(chunk) < self.global_batch:  # drop_last=False: wrap within the epoch
            chunk = torch.cat([chunk, order[: self.global_batch - len(chunk)]])
        return chunk

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            self._order = self._order_of(self.epoch)
        return self._order

    def _order_of(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.dataset), generator=gen)
        reps = -(-self.global_batch // len(order))  # a dataset smaller than one batch (drop_last=False)
        return order.repeat(reps) if reps > 1 else order

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "global_batch": self.global_batch, "sequences": len(self.dataset), "drop_last": self.drop_last,
                "data": getattr(self.dataset, "fingerprint", None)}

    def load_state_dict(self, state: dict[str, Any], new_data: bool = False) -> bool:
        """Continue the saved order. ``new_data``: the data may differ from the saved run's (more
        shards for a longer run); then the next batch opens a new epoch over this run's data.
        Returns whether the data changed."""
        mine = self.state_dict()
        changed = [k for k in ("seed", "global_batch", "sequences", "drop_last", "data")
                   if state.get(k) is not None and mine[k] is not None and state[k] != mine[k]]
        for key in changed:
            if not (new_data and key in ("sequences", "data")):
                raise ValueError(
                    f"cannot resume the data order: the saved state has {key}={state[key]!r}, this run has "
                    f"{mine[key]!r} (the data, global batch and seed must match the interrupted run; "
                    "--override resumes on changed data with a new epoch)"
                )
        if changed:  # a fresh permutation of the new data, never one seen before under this seed
            self.epoch, self.position, self._order = int(state["epoch"]) + 1, 0, None
            return True
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.batches_per_epoch:
            raise ValueError(f"bad data state epoch={epoch} position={position} "
                             f"(expected position in [0, {self.batches_per_epoch}])")
        self.epoch, self.position, self._order = epoch, position, None
        return False
