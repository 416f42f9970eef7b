"""anydepth.cameras: known values, batch shapes, dtypes, inverses and quaternion round trips."""

from __future__ import annotations

import math

import pytest
import torch

from anydepth.cameras import camera_centers, invert_rigid, matrix_to_quaternion, quaternion_to_matrix, to_homogeneous

DTYPES = (torch.float32, torch.float64)
BATCHES = ((), (5,), (2, 3))


def _rot_z(angle: float, dtype=torch.float64) -> torch.Tensor:
    """Rotation by ``angle`` about z, written out by hand (independent of the code under test)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def _random_rigid(batch: tuple[int, ...], rows: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """``[*batch, rows, 4]`` rigid transforms: rotations from QR (sign-fixed to det +1), translations in ±3."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(batch + (3, 3), generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    q = torch.where(torch.det(q)[..., None, None] < 0, -q, q)
    m = torch.zeros(batch + (rows, 4), dtype=torch.float64)
    m[..., :3, :3] = q
    m[..., :3, 3] = (torch.rand(batch + (3,), generator=g, dtype=torch.float64) - 0.5) * 6
    if rows == 4:
        m[..., 3, 3] = 1
    return m.to(dtype)


def _tol(dtype: torch.dtype) -> dict:
    return dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)


# ------------------------------------------------------------------------------------------------ known values


def test_known_inverse_centre_and_homogeneous():
    m = torch.zeros(3, 4, dtype=torch.float64)
    m[:, :3], m[:, 3] = _rot_z(math.pi / 2), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    inv = invert_rigid(m)
    expected = torch.tensor([[0.0, 1, 0, -2], [-1, 0, 0, 1], [0, 0, 1, -3]], dtype=torch.float64)
    torch.testing.assert_close(inv, expected, atol=1e-15, rtol=0)
    # -Rᵀ t: the point the camera sits at; R c + t must be the camera-frame origin
    c = camera_centers(m)
    torch.testing.assert_close(c, torch.tensor([-2.0, 1.0, -3.0], dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(m[:, :3] @ c + m[:, 3], torch.zeros(3, dtype=torch.float64), atol=1e-15, rtol=0)
    h = to_homogeneous(m)
    assert h.shape == (4, 4)
    torch.testing.assert_close(h[:3], m)
    assert h[3].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_known_quaternions():
    half = math.pi / 4  # 90° rotations
    for axis, expected in ((0, [[1, 0, 0], [0, 0, -1], [0, 1, 0]]), (1, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]),
                           (2, [[0, -1, 0], [1, 0, 0], [0, 0, 1]])):
        q = torch.zeros(4, dtype=torch.float64)
        q[axis], q[3] = math.sin(half), math.cos(half)
        torch.testing.assert_close(quaternion_to_matrix(q), torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(matrix_to_quaternion(torch.eye(3)), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    # scale of the quaternion does not matter
    q = torch.tensor([0.1, -0.7, 0.3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(quaternion_to_matrix(q * 7.5), quaternion_to_matrix(q), atol=1e-15, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(q), quaternion_to_matrix(-q), atol=1e-15, rtol=0)


def test_to_homogeneous_copies_and_resets_the_bottom_row():
    m = torch.eye(4)
    m[3] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # not a rigid bottom row: the result is rigid anyway
    h = to_homogeneous(m)
    assert h[3].tolist() == [0.0, 0.0, 0.0, 1.0]
    h[0, 0] = 9.0
    assert m[0, 0] == 1.0  # a new tensor: the input is untouched


# ------------------------------------------------------------------------------------------------ shapes, dtypes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("rows", (3, 4))
def test_batch_shapes_and_dtypes(batch, rows, dtype):
    m = _random_rigid(batch, rows, dtype)
    for out, shape in ((invert_rigid(m), batch + (rows, 4)), (to_homogeneous(m), batch + (4, 4)),
                       (camera_centers(m), batch + (3,)), (matrix_to_quaternion(m[..., :3, :3]), batch + (4,))):
        assert out.shape == shape and out.dtype == dtype
    q = matrix_to_quaternion(m[..., :3, :3])
    assert quaternion_to_matrix(q).shape == batch + (3, 3) and quaternion_to_matrix(q).dtype == dtype
    # batched = one at a time
    flat, inv = m.reshape(-1, rows, 4), invert_rigid(m).reshape(-1, rows, 4)
    for i in range(flat.shape[0]):
        torch.testing.assert_close(inv[i], invert_rigid(flat[i]), **_tol(dtype))  # kernels may round differently


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", (3, 4))
def test_inverse_times_matrix_is_identity(rows, dtype):
    m = _random_rigid((7,), rows, dtype, seed=1)
    inv = invert_rigid(m)
    eye = torch.eye(4, dtype=dtype).expand(7, 4, 4)
    torch.testing.assert_close(to_homogeneous(inv) @ to_homogeneous(m), eye, **_tol(dtype))
    torch.testing.assert_close(to_homogeneous(m) @ to_homogeneous(inv), eye, **_tol(dtype))
    torch.testing.assert_close(invert_rigid(inv), m, **_tol(dtype))
    # the rigid inverse is the matrix inverse
    torch.testing.assert_close(to_homogeneous(inv), torch.linalg.inv(to_homogeneous(m).double()).to(dtype), **_tol(dtype))
    # centres are the inverse's translation
    torch.testing.assert_close(camera_centers(m), inv[:, :3, 3], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quaternion_round_trip(dtype):
    g = torch.Generator().manual_seed(2)
    q = torch.nn.functional.normalize(torch.randn(64, 4, generator=g, dtype=torch.float64), dim=-1)
    q = torch.where(q[:, 3:] < 0, -q, q)  # canonical sign: w >= 0
    # near-180° rotations (w ≈ 0) and the identity test the branch choice of matrix_to_quaternion
    q = torch.cat([q, torch.tensor([[1.0, 0, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0, 1], [0.5, 0.5, 0.5, 1e-4]], dtype=torch.float64)])
    q = torch.nn.functional.normalize(q, dim=-1).to(dtype)
    m = quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=dtype).expand_as(m)
    torch.testing.assert_close(m @ m.transpose(-1, -2), eye, **_tol(dtype))  # orthonormal
    torch.testing.assert_close(torch.det(m.double()), torch.ones(m.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
    back = matrix_to_quaternion(m)
    assert (back[:, 3] >= 0).all()
    # q and -q are the same rotation; compare up to that sign (w = 0 rows may come back negated)
    sign = torch.where((back * q).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(dtype)
    torch.testing.assert_close(back * sign, q, **_tol(dtype))
    torch.testing.assert_close(quaternion_to_matrix(back), m, **_tol(dtype))


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", (invert_rigid, to_homogeneous, camera_centers))
def test_rigid_helpers_name_a_bad_shape(fn):
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 4\] or \[\.\.\., 4, 4\].*\(2, 3, 3\)"):
        fn(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="ndarray"):
        fn(torch.zeros(3, 4).numpy())


def test_quaternion_helpers_name_a_bad_shape():
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\].*\(2, 3\)"):
        quaternion_to_matrix(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\].*\(4, 4\)"):
        matrix_to_quaternion(torch.eye(4))
