"""SteerableResidualBlock: exact grid equivariance with identity and projected skips, strided (pooled) and
not, SO(3) and O(3); the sum sits before the gate; the zero-initialised block is its skip path."""
import pytest
import torch
from e3nn import o3

from nnunet_equivariant.layers import SteerableResidualBlock
from nnunet_equivariant.testing import assert_equivariant, grid_rotations, grid_symmetries


def _block(irreps_in, irreps_out, stride=1, parity=False, spacing=(1.0, 1.0, 1.0), kernel_size=3):
    block = SteerableResidualBlock(irreps_in, irreps_out, kernel_size=kernel_size, spacing=spacing, parity=parity,
                                   stride=stride)
    with torch.no_grad():  # random affine norm parameters: equivariance must not lean on the identity init
        for name, p in block.named_parameters():
            if "norm" in name:
                p.normal_()
    return block


@pytest.mark.parametrize("irreps_in, irreps_out, stride", [
    ("2x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e", 1),  # identity skip
    ("2x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e", 2),  # identity skip after pooling
    ("1x0e", "2x0e + 1x1e + 1x2e", 1),  # projection from scalars (a stage's first block after the stem)
    ("2x0e + 1x1e + 1x2e", "3x0e + 2x1e + 1x2e", 2),  # projection and pooling: a stage's first block
])
def test_so3_block_is_equivariant_on_all_24_rotations(float64_default, irreps_in, irreps_out, stride):
    block = _block(irreps_in, irreps_out, stride)
    assert (block.skip is None) == (irreps_in == irreps_out)
    x = torch.randn(1, o3.Irreps(irreps_in).dim, 6, 6, 6)
    assert block(x).shape == (1, block.irreps_out.dim, 6 // stride, 6 // stride, 6 // stride)
    assert_equivariant(block, x, grid_rotations(), rep_in=o3.Irreps(irreps_in), rep_out=block.irreps_out, tol=1e-10)


@pytest.mark.parametrize("irreps_in, irreps_out", [
    ("2x0e + 1x0o + 1x1o + 1x2e", "2x0e + 1x0o + 1x1o + 1x2e"),
    ("1x0e", "2x0e + 1x1o + 1x2e"),  # (a 0o output has no path from 0e through kernels of l <= 2)
])
def test_o3_block_is_equivariant_on_all_48_symmetries(float64_default, irreps_in, irreps_out):
    block = _block(irreps_in, irreps_out, stride=2, parity=True)
    x = torch.randn(1, o3.Irreps(irreps_in).dim, 6, 6, 6)
    assert_equivariant(block, x, grid_symmetries(), rep_in=o3.Irreps(irreps_in), rep_out=block.irreps_out, tol=1e-10)


def test_anisotropic_stride_block_is_equivariant_to_its_grid(float64_default):
    """nnU-Net's in-plane stride [1, 2, 2] on a (3, 1, 1) mm grid: after pooling the voxels are (3, 2, 2) mm;
    the symmetries that keep x (16 of 48, 8 rotations) stay exact."""
    block = _block("2x0e + 1x1e", "2x0e + 1x1e + 1x2e", stride=(1, 2, 2), spacing=(3.0, 2.0, 2.0), kernel_size=5)
    assert block.block1.conv.kernel_shape == (3, 5, 5)
    x = torch.randn(1, 5, 4, 8, 8)
    grid = [R for R in grid_rotations() if abs(R[0, 0]) == 1]
    assert len(grid) == 8
    assert_equivariant(block, x, grid, rep_in=o3.Irreps("2x0e + 1x1e"), rep_out=block.irreps_out, tol=1e-10)


def test_nonlinearity_sits_after_the_sum(float64_default):
    """y = gate(norm2(conv2(block1(p))) + skip(p)): recomputed by hand from the parts."""
    block = _block("2x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e", stride=2)
    x = torch.randn(1, block.irreps_in.dim, 8, 8, 8)
    with torch.no_grad():
        p = block.pool(x)
        r = block.norm2(block.conv2(block.block1(p)))
        ns, ng = 2, 2  # two scalars; one gate per 1e and per 2e copy
        summed = torch.cat([r[:, :ns] + p[:, :ns], r[:, ns:ns + ng], r[:, ns + ng:] + p[:, ns:]], 1)
        expected = block.gate(summed)
        gated_before_sum = block.gate(r)[:, :] + p  # the other order, which is not the block
        assert torch.allclose(block(x), expected, rtol=0, atol=1e-12)
        assert not torch.allclose(block(x), gated_before_sum, atol=1e-3)


def test_zero_initialised_block_is_its_gated_skip(float64_default):
    block = _block("2x0e + 1x1e", "3x0e + 1x1e", stride=1)
    block.zero_init_last_norm()
    x = torch.randn(1, 5, 6, 6, 6)
    with torch.no_grad():
        skip = block.skip(x)
        gates = torch.full((1, 1, 6, 6, 6), 0.5, dtype=x.dtype)  # sigmoid(0): the gate scalars are all zero
        expected = block.gate(torch.cat([skip[:, :3], torch.zeros_like(gates), skip[:, 3:]], 1))
        assert torch.allclose(block(x), expected, rtol=0, atol=1e-12)
        assert torch.allclose(expected[:, 3:], 0.5 * skip[:, 3:], rtol=0, atol=1e-12)


def test_skip_from_scalars_feeds_only_the_scalars(float64_default):
    """A pointwise equivariant map cannot make vectors from scalars: the skip projects the scalars only."""
    block = _block("1x0e", "2x0e + 1x1e", stride=1)
    assert block.skip[0].irreps_out == o3.Irreps("2x0e") and block._skip_channels.tolist() == [0, 1]
    block.zero_init_last_norm()
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        assert torch.count_nonzero(block(x)[:, 2:]) == 0, "no vector term at all when the residual is zero"
        assert torch.count_nonzero(block(x)[:, :2]) > 0


def test_feature_map_size_counts_the_block_outputs():
    block = SteerableResidualBlock("1x0e", "2x0e + 1x1e", kernel_size=3, spacing=(1, 1, 1), parity=False, stride=2)
    # pooled input 1, block1 conv (2 + 1 gate + 3) twice + gate out 5, conv2/norm2/sum 6 x 3, skip (2x0e) 2 x 2,
    # gate 5
    assert block.compute_conv_feature_map_size((8, 8, 8)) == (1 + 12 + 5 + 18 + 4 + 5) * 64


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="stride must be"):
        SteerableResidualBlock("1x0e", "1x0e", 3, (1, 1, 1), False, stride=(2, 2))
    with pytest.raises(ValueError, match="odd irreps"):
        SteerableResidualBlock("1x0e", "1x1o", 3, (1, 1, 1), parity=False)
    block = SteerableResidualBlock("1x0e", "1x0e + 1x1e", 3, (1, 1, 1), False, stride=2)
    with pytest.raises(ValueError, match="not divisible by the pooling stride"):
        block(torch.randn(1, 1, 8, 8, 7))
