"""Attention patterns against masks drawn by hand."""

from __future__ import annotations

import torch

from trimode import masks


def grid(text: str) -> torch.Tensor:
    rows = [line.split("|")[-1].replace(" ", "") for line in text.strip().splitlines()]
    return torch.tensor([[c == "1" for c in r] for r in rows])


def test_causal_and_bidirectional():
    assert torch.equal(masks.causal(3), grid("100\n110\n111"))
    assert masks.bidirectional(3).all()


def test_dual_stream_matches_spec_example():
    # ../shared/spec/tri-mode.md section 2, L=4, B=2 (rows queries n0..n3 c0..c3, columns keys).
    expected = grid(
        """
        n0| 1 1 0 0 0 0 0 0
        n1| 1 1 0 0 0 0 0 0
        n2| 0 0 1 1 1 1 0 0
        n3| 0 0 1 1 1 1 0 0
        c0| 0 0 0 0 1 0 0 0
        c1| 0 0 0 0 1 1 0 0
        c2| 0 0 0 0 1 1 1 0
        c3| 0 0 0 0 1 1 1 1
        """
    )
    assert torch.equal(masks.dual_stream(4, 2), expected)


def test_dual_stream_partial_last_block():
    m = masks.dual_stream(5, 2)  # blocks {0,1} {2,3} {4}
    assert m[4, 4] and not m[4, 3]  # noisy token 4 alone in its block
    assert m[4, 5 + 3] and not m[4, 5 + 4]  # sees clean 0..3, not its own clean twin


def test_quadratic_grid_block2():
    # Rows [d0 M M | d1 M M]; heads are causal in row order, masks see heads up to their row
    # plus their whole row.
    expected = grid(
        """
        d0 | 1 0 0 0 0 0
        m00| 1 1 1 0 0 0
        m01| 1 1 1 0 0 0
        d1 | 1 0 0 1 0 0
        m10| 1 0 0 1 1 1
        m11| 1 0 0 1 1 1
        """
    )
    assert torch.equal(masks.quadratic_grid(2), expected)
    assert masks.quadratic_grid_positions(10, 2).tolist() == [10, 11, 12, 11, 12, 13]


def test_over_cache_ragged_rows():
    # Row 0 has 2 cached tokens, row 1 has 0; 2 new causal tokens; buffer of 4 slots.
    m = masks.over_cache(masks.causal(2), torch.tensor([2, 0]), 4)
    assert m.shape == (2, 1, 2, 4)
    assert torch.equal(m[0, 0], grid("1110\n1111"))
    assert torch.equal(m[1, 0], grid("1000\n1100"))


def test_over_cache_custom_intra_per_row():
    intra = torch.stack([masks.bidirectional(2), masks.causal(2)])
    m = masks.over_cache(intra, torch.tensor([1, 1]), 3)
    assert torch.equal(m[0, 0], grid("111\n111"))
    assert torch.equal(m[1, 0], grid("110\n111"))


def test_over_cache_sliding_window():
    # 3 cached tokens (positions 0..2), one new token at position 3, window 2: sees positions 2, 3.
    m = masks.over_cache(masks.causal(1), torch.tensor([3]), 4, q_positions=torch.tensor([[3]]), window=2)
    assert torch.equal(m[0, 0], grid("0011"))


def test_known_then_block_keeps_the_seed_causal():
    # The draft block [seed, M, M] of a masks-scoped adapter: the seed sees only itself.
    assert torch.equal(masks.known_then_block(3, 1), grid("100\n111\n111"))
    assert torch.equal(masks.known_then_block(3, 2), grid("100\n110\n111"))
