"""Which samples each rank trains on, and their random draws (no training)."""

import torch

from interactavatar.train.sampling import BatchLayout, StepRandomness, clip_indices


def test_ranks_take_disjoint_slices_whose_union_is_the_one_process_batch():
    one_process = BatchLayout(micro_batch_size=4, accumulation=2)
    ranks = [BatchLayout(micro_batch_size=2, accumulation=2, ranks=2, rank=r) for r in (0, 1)]
    assert one_process.global_batch == ranks[0].global_batch == 8
    for step in range(3):
        for micro in range(2):
            rank0, rank1 = (set(layout.samples(step, micro)) for layout in ranks)
            assert not rank0 & rank1
            assert rank0 | rank1 == set(one_process.samples(step, micro))
    # over its micro-batches a step covers its global batch, and steps follow each other
    step_one = {s for layout in ranks for micro in range(2) for s in layout.samples(1, micro)}
    assert step_one == set(range(8, 16))


def test_within_an_epoch_the_ranks_train_on_different_clips():
    clips, seed = 16, 5
    ranks = [BatchLayout(micro_batch_size=2, accumulation=2, ranks=2, rank=r) for r in (0, 1)]
    epoch = []
    for step in range(2):  # a global batch of 8: two steps make the epoch
        per_rank = [torch.cat([clip_indices(layout.samples(step, m), clips, seed) for m in range(2)]).tolist()
                    for layout in ranks]
        assert not set(per_rank[0]) & set(per_rank[1])
        epoch += per_rank[0] + per_rank[1]
    assert sorted(epoch) == list(range(clips))
    one_process = torch.cat([clip_indices(range(4 * p, 4 * p + 4), clips, seed) for p in range(4)])
    assert sorted(one_process.tolist()) == list(range(clips))
    next_epoch = clip_indices(range(clips, 2 * clips), clips, seed)
    assert not torch.equal(next_epoch, clip_indices(range(clips), clips, seed))
    assert torch.equal(next_epoch, clip_indices(range(clips, 2 * clips), clips, seed))


def test_a_sample_draws_the_same_wherever_it_lands():
    def draws(seed=3, step=7, samples=range(30, 32)):
        return StepRandomness.keyed(seed, step, samples)

    whole, tail = draws(samples=range(28, 32)), draws()
    latents = torch.zeros(4, 2, 3, 4, 4)
    assert torch.equal(whole.normal_like(latents)[2:], tail.normal_like(latents[2:]))
    assert torch.equal(whole.uniform()[2:], tail.uniform())
    assert not torch.equal(draws(seed=4).uniform(), draws().uniform())


def test_a_step_draws_the_same_on_every_rank_and_micro_batch():
    def step_draw(step, samples):
        return torch.rand(1, generator=StepRandomness.keyed(3, step, samples).step)

    assert step_draw(7, range(28, 30)) == step_draw(7, range(30, 32))
    assert step_draw(7, range(28, 30)) != step_draw(8, range(32, 34))
