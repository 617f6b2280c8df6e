"""Batches: per-epoch permutations, exact resume (mid-epoch and across epochs), rank sharding."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from trimode.train.data import Batches, PackedDataset

SEQ = 3


def numbered(n: int) -> PackedDataset:
    """Sequence i holds the value i everywhere, so a batch shows which sequences it took."""
    ids = torch.arange(n, dtype=torch.int32)[:, None].repeat(1, SEQ)
    return PackedDataset(ids, ids % 2 == 0)


def take(batches: Batches, k: int) -> list[list[int]]:
    out = []
    for batch in itertools.islice(batches, k):
        assert batch["input_ids"].dtype == torch.long and batch["loss_mask"].dtype == torch.bool
        assert torch.equal(batch["loss_mask"], batch["input_ids"] % 2 == 0)
        out.append(batch["input_ids"][:, 0].tolist())
    return out


def flat(lists) -> list[int]:
    return [x for part in lists for x in part]


def test_epochs_are_reshuffled_permutations_and_endless():
    b = Batches(numbered(10), global_batch=3, seed=5)
    assert b.batches_per_epoch == 3
    got = take(b, 9)  # three epochs
    epochs = [flat(got[3 * e : 3 * e + 3]) for e in range(3)]
    for e, seen in enumerate(epochs):
        order = torch.randperm(10, generator=torch.Generator().manual_seed(5 + e)).tolist()
        assert seen == order[:9]  # one sequence per epoch is dropped (drop_last), a different one each time
    assert len({tuple(e) for e in epochs}) == 3
    assert b.epoch == 2


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 7])  # 3 = exactly at the epoch boundary
def test_resume_continues_exactly(k):
    data = numbered(7)
    reference = take(Batches(data, global_batch=2, seed=1), k + 5)
    first = Batches(data, global_batch=2, seed=1)
    assert take(first, k) == reference[:k]
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
    resumed = Batches(data, global_batch=2, seed=1)
    resumed.load_state_dict(state)
    assert resumed.epoch == first.epoch
    assert take(resumed, 5) == reference[k:]


@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_concatenate_to_the_global_batch(world):
    data = numbered(13)
    single = take(Batches(data, global_batch=4, seed=3), 10)
    ranks = [take(Batches(data, global_batch=4, seed=3, rank=r, world_size=world), 10) for r in range(world)]
    for step in range(10):
        assert flat(ranks[r][step] for r in range(world)) == single[step]


def test_resume_on_a_different_number_of_ranks():
    data = numbered(9)
    single = Batches(data, global_batch=4, seed=0)
    take(single, 3)
    reference = take(Batches(data, global_batch=4, seed=0), 6)[3:]
    shards = []
    for r in range(2):
        b = Batches(data, global_batch=4, seed=0, rank=r, world_size=2)
        b.load_state_dict(single.state_dict())
        shards.append(take(b, 3))
    assert [shards[0][i] + shards[1][i] for i in range(3)] == reference


def test_drop_last_false_fills_the_last_batch_from_the_same_epoch():
    b = Batches(numbered(5), global_batch=2, seed=0, drop_last=False)
    assert b.batches_per_epoch == 3
    got = take(b, 4)
    order = torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()
    assert flat(got[:3]) == order + order[:1]
    assert got[3] == torch.randperm(5, generator=torch.Generator().manual_seed(1)).tolist()[:2]
    tiny = Batches(numbered(2), global_batch=5, seed=0, drop_last=False)  # smaller than one batch
    assert sorted(set(take(tiny, 1)[0])) == [0, 1]


def test_bad_arguments_and_mismatched_state():
    data = numbered(4)
    with pytest.raises(ValueError, match="fewer than one global batch of 8"):
        Batches(data, global_batch=8, seed=0)
    with pytest.raises(ValueError, match="not divisible by world_size 3"):
        Batches(data, global_batch=4, seed=0, world_size=3)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, world_size=2\)"):
        Batches(data, global_batch=4, seed=0, rank=2, world_size=2)
    state = Batches(data, global_batch=2, seed=0).state_dict()
    with pytest.raises(ValueError, match="saved state has seed=0, this run has 1"):
        Batches(data, global_batch=2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="saved state has sequences=4, this run has 5"):
        Batches(numbered(5), global_batch=2, seed=0).load_state_dict(state)
    other = PackedDataset(numbered(4).input_ids + 1, numbered(4).loss_mask)  # same size, other tokens
    with pytest.raises(ValueError, match="saved state has data="):
        Batches(other, global_batch=2, seed=0).load_state_dict(state)


def test_new_data_on_resume_opens_a_new_epoch_over_it_when_allowed():
    # A longer run on more shards keeps its model and optimizer; its data order starts afresh.
    old = Batches(numbered(4), global_batch=2, seed=0)
    next(iter(old))
    state = old.state_dict()
    bigger = Batches(numbered(6), global_batch=2, seed=0)
    assert bigger.load_state_dict(state, new_data=True) is True
    assert (bigger.epoch, bigger.position) == (state["epoch"] + 1, 0)
    fresh = Batches(numbered(6), global_batch=2, seed=0)
    fresh.epoch = state["epoch"] + 1
    assert [b["input_ids"].tolist() for b, _ in zip(bigger, range(3))] == [
        b["input_ids"].tolist() for b, _ in zip(fresh, range(3))]
    same = Batches(numbered(4), global_batch=2, seed=0)
    assert same.load_state_dict(state, new_data=True) is False and same.position == state["position"]
    with pytest.raises(ValueError, match="saved state has seed=0, this run has 1"):
        Batches(numbered(6), global_batch=2, seed=1).load_state_dict(state, new_data=True)
