"""MST channel reuse (design.md §3): planner and schedule execution against naive references.

The oracles here are deliberately plain: Hamming distances by comparing unpacked bits, popcounts
from a ±1 integer matrix product, and the exact optimum from scipy's minimum spanning tree.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import minimum_spanning_tree

from bnnfab.models.bits import pack_bits, to_pm1
from bnnfab.sim.mst import MstSchedule, hamming_matrix, mst_popcounts, plan_mst

DEPTHS = [0, 1, 2, 3, 5, None]
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---------------------------------------------------------------------------------------------
# Naive oracles
# ---------------------------------------------------------------------------------------------


def naive_hamming(wb: np.ndarray) -> np.ndarray:
    return (wb[:, None, :] != wb[None, :, :]).sum(axis=-1)


def naive_popcounts(xb: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """p = popcount(XNOR(x, w)) from the ±1 dot product: dot = 2p - K."""
    k = wb.shape[1]
    dot = to_pm1(xb).astype(np.int64) @ to_pm1(wb).astype(np.int64).T
    return (dot + k) // 2


def scipy_mst_cost(wb: np.ndarray, inverted: bool) -> int:
    """Weight of the MST of the channel graph plus a virtual root joined to all at cost K.

    scipy reads a 0 entry as "no edge", so every weight is stored plus one and the N edges of the
    spanning tree (N + 1 nodes) are subtracted afterwards.
    """
    n, k = wb.shape
    d = naive_hamming(wb)
    if inverted:
        d = np.minimum(d, k - d)
    a = np.zeros((n + 1, n + 1))
    a[0, 1:] = k + 1
    iu = np.triu_indices(n, 1)
    a[1:, 1:][iu] = d[iu] + 1
    return int(round(minimum_spanning_tree(a).sum())) - n


# ---------------------------------------------------------------------------------------------
# Layers to plan
# ---------------------------------------------------------------------------------------------

KINDS = ["random", "clustered", "duplicates", "complements", "zeros", "ones"]


def make_weights(kind: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.random((n, k)) < 0.5
    if kind == "zeros":
        return np.zeros((n, k), dtype=bool)
    if kind == "ones":
        return np.ones((n, k), dtype=bool)
    protos = rng.random((int(rng.integers(1, 5)), k)) < 0.5
    rows = protos[rng.integers(0, len(protos), n)]
    if kind == "duplicates":
        return rows
    if kind == "complements":
        rows = rows ^ (rng.random(n) < 0.5)[:, None]
    return rows ^ (rng.random((n, k)) < rng.choice([0.03, 0.1, 0.25]))


@st.composite
def layers(draw, max_n=200):
    n = draw(st.sampled_from([n for n in (1, 2, 3, 7, 65, 200) if n <= max_n]))
    k = draw(st.sampled_from([1, 63, 64, 65, 300]))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return make_weights(kind, n, k, rng), rng


# ---------------------------------------------------------------------------------------------
# Hamming matrix
# ---------------------------------------------------------------------------------------------


@PROPERTY
@given(layers())
def test_hamming_matrix_matches_naive(layer):
    wb, _ = layer
    d = hamming_matrix(pack_bits(wb), wb.shape[1])
    assert d.shape == (wb.shape[0],) * 2
    assert np.array_equal(d, naive_hamming(wb))


def test_hamming_matrix_ignores_pad_bits():
    rng = np.random.default_rng(1)
    wb = rng.random((9, 70)) < 0.5
    packed = pack_bits(wb)
    dirty = packed.copy()
    dirty[:, -1] |= rng.integers(0, 2**58, size=9, dtype=np.uint64) << np.uint64(6)
    assert np.array_equal(hamming_matrix(dirty, 70), naive_hamming(wb))


# ---------------------------------------------------------------------------------------------
# Planner: optimality, limits, exact execution
# ---------------------------------------------------------------------------------------------


@PROPERTY
@given(layers(), st.booleans())
def test_unlimited_cost_is_the_exact_mst(layer, inverted):
    wb, _ = layer
    s = plan_mst(wb, None, inverted)
    s.validate()
    assert s.cost == scipy_mst_cost(wb, inverted)


def check_schedule(s: MstSchedule, wb: np.ndarray, limit, inverted: bool):
    n, k = wb.shape
    s.validate()
    assert (s.n, s.k, s.max_depth) == (n, k, limit)
    if limit is not None:
        assert s.depth_reached <= limit
    # every edge costs what the weights say, and the cost adds up
    d = naive_hamming(wb)
    nr = np.flatnonzero(s.parent >= 0)
    dd = d[s.parent[nr], nr]
    assert np.array_equal(s.distance[nr], np.where(s.inverted[nr], k - dd, dd))
    assert inverted or not s.inverted.any()
    assert s.cost == k * s.roots + int(s.distance[nr].sum())
    assert s.cost <= s.direct_cost == n * k


@PROPERTY
@given(layers(), st.booleans())
def test_every_depth_limit_is_valid_bounded_and_exact(layer, inverted):
    wb, rng = layer
    n, k = wb.shape
    lower = scipy_mst_cost(wb, inverted)
    xb = rng.random((int(rng.integers(1, 40)), k)) < 0.5
    want = naive_popcounts(xb, wb)
    xp, wp = pack_bits(xb), pack_bits(wb)
    for limit in DEPTHS:
        s = plan_mst(wb, limit, inverted)
        check_schedule(s, wb, limit, inverted)
        assert s.cost >= lower
        got = mst_popcounts(xp, wp, k, s)
        assert got.dtype == np.int32 and got.shape == (xb.shape[0], n)
        assert np.array_equal(got, want), f"depth limit {limit}"


def test_depth_zero_is_the_direct_path():
    rng = np.random.default_rng(2)
    wb = make_weights("duplicates", 20, 33, rng)
    s = plan_mst(wb, 0, True)
    assert s.roots == 20 and s.depth_reached == 0 and s.cost == s.direct_cost
    assert s.ratio == 1.0


def test_limit_at_or_above_mst_depth_is_optimal():
    rng = np.random.default_rng(3)
    wb = make_weights("clustered", 65, 64, rng)
    free = plan_mst(wb)
    assert plan_mst(wb, free.depth_reached).cost == free.cost
    assert plan_mst(wb, 10_000).cost == free.cost


def test_identical_channels_hang_from_one_root():
    wb = np.zeros((7, 65), dtype=bool)
    for limit in (1, 2, None):
        s = plan_mst(wb, limit)
        assert s.roots == 1 and s.cost == 65 and s.depth_reached == 1


def test_complementary_channels_use_the_inverted_parent():
    rng = np.random.default_rng(4)
    w = rng.random(100) < 0.5
    wb = np.stack([w, ~w, w, ~w])
    plain = plan_mst(wb, None, False)
    inv = plan_mst(wb, None, True)
    assert plain.cost == 100 + 100 + 0 + 0  # channel 1 is as far as a root
    assert inv.cost == 100 and inv.stats()["inverted_edges"] == 2
    xb = rng.random((5, 100)) < 0.5
    assert np.array_equal(
        mst_popcounts(pack_bits(xb), pack_bits(wb), 100, inv), naive_popcounts(xb, wb)
    )


def test_popcounts_ignore_pad_bits_and_run_many_vectors():
    rng = np.random.default_rng(5)
    wb = make_weights("clustered", 65, 130, rng)
    xb = rng.random((301, 130)) < 0.5
    s = plan_mst(wb, 2, True)
    xp = pack_bits(xb)
    xp[:, -1] |= np.uint64(0xFFFF_FFFF_FFFF_FFFC)  # 130 = 2 * 64 + 2: the rest is pad
    assert np.array_equal(mst_popcounts(xp, pack_bits(wb), 130, s), naive_popcounts(xb, wb))


def test_packed_weights_plan_the_same_schedule():
    rng = np.random.default_rng(6)
    wb = make_weights("clustered", 40, 100, rng)
    for limit in (1, 3, None):
        assert plan_mst(pack_bits(wb), limit, True, k=100) == plan_mst(wb, limit, True)


def test_planning_is_deterministic():
    rng = np.random.default_rng(7)
    wb = make_weights("clustered", 120, 96, rng)
    for limit in (1, 2, 4, None):
        a = plan_mst(wb, limit, True)
        b = plan_mst(wb.copy(), limit, True)
        assert a == b
        assert a.stats() == b.stats()


def test_stats_are_plain_python():
    rng = np.random.default_rng(8)
    wb = make_weights("random", 30, 64, rng)
    s = plan_mst(wb, 2, True)
    st_ = s.stats()
    assert set(st_) == {
        "n", "k", "roots", "depth", "max_depth", "direct_ops", "mst_ops", "ratio",
        "inverted_edges",
    }
    assert all(type(v) in (int, float) for v in st_.values())
    assert st_["mst_ops"] == s.cost and st_["direct_ops"] == 30 * 64
    assert st_["ratio"] == pytest.approx(30 * 64 / s.cost)
    assert plan_mst(wb).stats()["max_depth"] is None


def test_schedule_arrays_are_read_only():
    s = plan_mst(np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError):
        s.parent[0] = 2


def test_random_weight_ratios():
    """The figures the issue quotes: about 2.7x (N=64, K=64) and 2.2x (N=256, K=784)."""
    rng = np.random.default_rng(9)
    for (n, k), floor in (((64, 64), 2.4), ((256, 784), 2.0)):
        wb = rng.random((n, k)) < 0.5
        ratios = {lim: plan_mst(wb, lim).ratio for lim in (1, 2, 4, 8, None)}
        print(f"N={n} K={k}: " + ", ".join(f"L={lim}: {r:.2f}x" for lim, r in ratios.items()))
        assert ratios[None] > floor
        assert min(ratios.values()) > 1.8


# ---------------------------------------------------------------------------------------------
# Errors name the rule and the value
# ---------------------------------------------------------------------------------------------

W = np.zeros((4, 10), dtype=bool)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((W, -1), {}, r"max_depth must be None or a non-negative integer, not -1"),
        ((W, 1.5), {}, r"max_depth must be None or a non-negative integer, not 1\.5"),
        ((W, True), {}, r"max_depth must be None or a non-negative integer, not True"),
        ((W, "2"), {}, r"max_depth must be None or a non-negative integer, not '2'"),
        ((W, None, "yes"), {}, r"allow_inverted must be a bool, not 'yes'"),
        ((W.astype(np.int8),), {}, r"weights must be boolean \(N, K\).* not int8"),
        ((W.astype(float),), {}, r"weights must be boolean \(N, K\).* not float64"),
        ((W[0],), {}, r"weights must be a 2-D \(N, K\) boolean array, not 1-D"),
        ((np.zeros((0, 10), dtype=bool),), {}, r"at least one channel"),
        ((np.zeros((3, 0), dtype=bool),), {}, r"at least one bit"),
        ((W,), {"k": 11}, r"k=11 does not match the weights' K=10"),
        ((pack_bits(W),), {}, r"packed uint64 weights need k="),
        ((pack_bits(W),), {"k": 65}, r"weights must have shape \(N, 2\) for k=65, not \(4, 1\)"),
        ((pack_bits(W),), {"k": 0}, r"k must be a positive integer, not 0"),
    ],
)
def test_plan_mst_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_mst(*args, **kwargs)


def test_hamming_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match=r"w_packed must be packed uint64 words, not int64"):
        hamming_matrix(np.zeros((3, 1), dtype=np.int64), 10)
    with pytest.raises(ValueError, match=r"shape \(N, 1\) for k=10, not \(3, 2\)"):
        hamming_matrix(np.zeros((3, 2), dtype=np.uint64), 10)
    with pytest.raises(ValueError, match=r"k must be a positive integer, not -3"):
        hamming_matrix(np.zeros((3, 1), dtype=np.uint64), -3)


def test_mst_popcounts_rejects_mismatches():
    rng = np.random.default_rng(10)
    wb = make_weights("clustered", 6, 70, rng)
    wp, xp = pack_bits(wb), pack_bits(rng.random((2, 70)) < 0.5)
    s = plan_mst(wb)
    with pytest.raises(ValueError, match=r"schedule is for n=6 channels of k=70 bits, but the"):
        mst_popcounts(xp, wp[:5], 70, s)
    with pytest.raises(ValueError, match=r"x_packed must be packed uint64 words, not bool"):
        mst_popcounts(np.zeros((2, 2), dtype=bool), wp, 70, s)
    with pytest.raises(ValueError, match=r"x_packed must have shape \(N, 2\) for k=70, not \(2,"):
        mst_popcounts(xp[0], wp, 70, s)
    with pytest.raises(ValueError, match=r"schedule must be an MstSchedule, not dict"):
        mst_popcounts(xp, wp, 70, s.stats())
    other = make_weights("random", 6, 70, rng)
    if s.roots < 6:
        with pytest.raises(ValueError, match=r"schedule does not match the weights: channel \d+"):
            mst_popcounts(xp, pack_bits(other), 70, s)


def schedule(parent, depth, distance=None, order=None, max_depth=None, inverted=None, k=8):
    n = len(parent)
    parent = np.array(parent)
    if distance is None:
        distance = np.where(parent < 0, k, 1)
    return MstSchedule(
        k=k,
        n=n,
        parent=parent,
        inverted=np.zeros(n, bool) if inverted is None else np.array(inverted),
        distance=np.array(distance),
        depth=np.array(depth),
        order=np.argsort(np.array(depth), kind="stable") if order is None else np.array(order),
        max_depth=max_depth,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(parent=[-1, 5], depth=[0, 1]),
            r"parent of channel 1 must be -1 or in 0\.\.1, not 5",
        ),
        (dict(parent=[-1, 1], depth=[0, 1]), r"channel 1 must not be its own parent"),
        (
            dict(parent=[-1, 0], depth=[0, 1], distance=[7, 1]),
            r"root channel 0 must have distance K=8, not 7",
        ),
        (
            dict(parent=[-1, 0], depth=[0, 1], inverted=[True, False]),
            r"root channel 0 cannot be inverted",
        ),
        (
            dict(parent=[-1, 0], depth=[0, 1], distance=[8, 9]),
            r"edge distance of channel 1 must be in 0\.\.8, not 9",
        ),
        (
            dict(parent=[-1, 2, 1], depth=[0, 1, 2]),
            r"forest must be acyclic: channel \d is its own ancestor",
        ),
        (dict(parent=[-1, 0], depth=[1, 2]), r"root channel 0 must have depth 0, not 1"),
        (
            dict(parent=[-1, 0, 1], depth=[0, 1, 1]),
            r"depth of channel 2 must be its parent's depth \+ 1 = 2, not 1",
        ),
        (dict(parent=[-1, 0], depth=[0, 1], order=[0, 0]), r"order must be a permutation"),
        (
            dict(parent=[-1, 0], depth=[0, 1], order=[1, 0]),
            r"channel 1 precedes its parent 0",
        ),
        (
            dict(parent=[-1, 0, 1], depth=[0, 1, 2], max_depth=1),
            r"depth of channel 2 must not exceed max_depth=1, it is 2",
        ),
    ],
)
def test_validate_names_the_rule(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedule(**kwargs).validate()


def test_schedule_construction_checks_shapes_and_types():
    with pytest.raises(ValueError, match=r"MstSchedule\.depth must have shape \(2,\), not \(3,\)"):
        schedule(parent=[-1, 0], depth=[0, 1, 2], order=[0, 1])
    with pytest.raises(ValueError, match=r"MstSchedule\.inverted must be boolean, not int64"):
        schedule(parent=[-1, 0], depth=[0, 1], inverted=[0, 1])
    with pytest.raises(ValueError, match=r"MstSchedule\.k must be a positive integer, not 0"):
        schedule(parent=[-1, 0], depth=[0, 1], k=0)
    with pytest.raises(ValueError, match=r"MstSchedule\.max_depth must be None or a non-negative"):
        schedule(parent=[-1, 0], depth=[0, 1], max_depth=-2)
    schedule(parent=[-1, 0, 1], depth=[0, 1, 2], max_depth=2).validate()
