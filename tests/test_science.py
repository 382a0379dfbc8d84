"""The batch-size science's math on constructed data with known answers: the critical-batch fit
(censored medians as bounds, its intervals, bounds beyond the range, the jackknife, re-tunings),
expected best-of-k against brute force, linear rates from exact and
log-binned traces, the rate theory, lr-scaling slopes and the divergence boundary."""
from __future__ import annotations

import itertools
import math
from array import array

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from suite.report.stats.batch_science import (
    divergence_boundary,
    best_of_k,
    linear_rate,
    lr_slope,
    optimal_parameters,
    theory_rate,
)
from suite.report.stats.bounds import Seeds, censored_median, median_interval
from suite.report.stats.critical_batch import critical_batch, scaling_curve
from suite.train.trace import bin_trace


def noisy_curve(s_min, b_crit, sizes, seeds=6, spread=0.08, seed=3, cap=math.inf) -> dict:
    """Seeds of S(B)·exp(N(0, spread²)) per batch size; a seed above ``cap`` is censored at it."""
    rng = np.random.default_rng(seed)
    out = {}
    for b in sizes:
        steps = scaling_curve(b, s_min, b_crit) * np.exp(rng.normal(0, spread, seeds))
        out[float(b)] = [Seeds.of(np.minimum(steps, cap), steps > cap)]
    return out


@pytest.mark.parametrize("s_min, b_crit", [(1000.0, 64.0), (250.0, 8.0)])
def test_critical_batch_fit_recovers_a_known_curve_within_its_interval(s_min, b_crit):
    sizes = 2.0 ** np.arange(0, 11)
    fit = critical_batch(noisy_curve(s_min, b_crit, sizes), resamples=300)
    assert fit["b_crit_lo"] <= b_crit <= fit["b_crit_hi"] and fit["s_min_lo"] <= s_min <= fit["s_min_hi"]
    assert fit["b_crit"] == pytest.approx(b_crit, rel=0.25) and fit["s_min"] == pytest.approx(s_min, rel=0.1)
    assert fit["e_min"] == pytest.approx(fit["s_min"] * fit["b_crit"])
    assert fit["n_batch_sizes"] == len(sizes) and fit["censored"] == 0 and fit["fit_rmse_log"] < 0.1
    assert fit["b_crit_relation"] == "" and not fit["fragile"]
    # the reported interval spans both bootstraps (seeds, lack of fit)
    assert fit["b_crit_lo"] == min(fit["b_crit_seeds_lo"], fit["b_crit_resid_lo"])
    assert fit["b_crit_hi"] == max(fit["b_crit_seeds_hi"], fit["b_crit_resid_hi"])


def test_a_censored_median_constrains_the_fit_as_a_lower_bound():
    """Small batches whose seeds mostly miss a 2,000-step cap: their medians are lower bounds at the
    cap. The fit recovers the known curve and brackets it; the bound is respected (the curve passes
    above it), while leaving those batch sizes out would lose that information."""
    s_min, b_crit, sizes = 200.0, 40.0, 2.0 ** np.arange(0, 10)
    curve = noisy_curve(s_min, b_crit, sizes, seeds=8, cap=2000.0)
    fit = critical_batch(curve, resamples=300)
    assert fit["censored"] == 3 and fit["n_batch_sizes"] == 7  # batch 1, 2, 4 need 8,200, 4,200, 2,200 steps
    assert fit["b_crit_lo"] <= b_crit <= fit["b_crit_hi"] and fit["s_min_lo"] <= s_min <= fit["s_min_hi"]
    assert fit["b_crit"] == pytest.approx(b_crit, rel=0.2)
    assert scaling_curve(sizes[:3], fit["s_min"], fit["b_crit"]).min() >= 2000.0 * 0.98
    median, bound = censored_median(curve[1.0][0])
    assert bound and median == 2000.0


def test_censored_median_is_exact_while_half_the_seeds_reached_the_target():
    assert censored_median(Seeds.of([30, 10, 20, 99], [False, False, False, True])) == (20.0, False)
    assert censored_median(Seeds.of([10, 20, 99, 99], [False, False, True, True])) == (20.0, False)  # half
    assert censored_median(Seeds.of([10, 97, 99, 99, 98], [False, True, True, True, True])) == (98.0, True)
    assert censored_median(Seeds.of([10, math.inf, math.inf], [False, True, True]))[0] == math.inf  # failed
    ten = Seeds.of([*range(10, 19), 99], [False] * 9 + [True])
    assert median_interval(ten) == (11.0, 18.0)  # x_(2), x_(9): 97.9% for n = 10
    assert median_interval(Seeds.of([10, 12, 14, 99], [False, False, False, True])) == (10.0, math.inf)


def test_a_critical_batch_outside_the_measured_range_is_a_bound():
    beyond = critical_batch(noisy_curve(1e5, 1e4, [4, 8, 16, 32, 64], spread=0.02), resamples=100)
    assert beyond["b_crit_relation"] == ">" and beyond["b_max"] == 64 and beyond["b_crit"] > 64
    below = critical_batch(noisy_curve(500.0, 0.5, [8, 16, 32, 64, 128], spread=0.02), resamples=100)
    assert below["b_crit_relation"] == "<" and below["b_min"] == 8


def test_the_jackknife_flags_a_fit_one_batch_size_makes():
    """Batch sizes 1–8 lie in the perfect-scaling regime of B_crit = 200; only batch 1024 shows the
    bend. The fit is tight, but without 1024 B_crit rests on the 2% noise at 1–8 and leaves it."""
    curve = noisy_curve(50.0, 200.0, [1, 2, 4, 8, 1024], seeds=10, spread=0.02)
    fragile = critical_batch(curve, resamples=200)
    assert fragile["b_crit_lo"] <= 200 <= fragile["b_crit_hi"] and fragile["fragile"]
    without = critical_batch({b: t for b, t in curve.items() if b < 1024}, resamples=0)["b_crit"]
    assert not fragile["b_crit_lo"] <= without <= fragile["b_crit_hi"]
    assert fragile["jackknife_lo"] <= without <= fragile["jackknife_hi"]
    assert not critical_batch(noisy_curve(50.0, 200.0, 2.0 ** np.arange(0, 11), seeds=10), resamples=200)["fragile"]


def test_pairs_faster_than_perfect_scaling_are_counted():
    curve = {b: [Seeds.of([s] * 3, [False] * 3)] for b, s in ((4, 1000.0), (16, 110.0), (64, 50.0), (256, 40.0))}
    curve[1024.0] = [Seeds.of([1.0] * 3, [True] * 3)]  # censored: no claim about its speed-up
    fit = critical_batch(curve, resamples=10)
    assert fit["faster_than_perfect"] == 1 and fit["faster_pairs"] == "4→16: 9.09× fewer steps for 4× the batch"


def test_retunings_widen_the_seed_interval():
    """Each re-tuning lands at its own speed (±30%): the bootstrap that draws a tuning per batch
    size before its seeds sees that spread; the primary tuning alone does not."""
    sizes = 2.0 ** np.arange(0, 9)
    primary = noisy_curve(500.0, 32.0, sizes, seeds=10, spread=0.05)
    rng = np.random.default_rng(1)
    tuned = {b: [*primary[b], *(Seeds(t[0].steps * f, t[0].censored) for f in rng.choice([0.7, 1.3], 2))]
             for b, t in primary.items()}
    alone, with_retunes = critical_batch(primary, resamples=300), critical_batch(tuned, resamples=300)
    assert with_retunes["b_crit"] == alone["b_crit"] and with_retunes["n_tunings"] == 3
    width = lambda f: math.log(f["b_crit_seeds_hi"] / f["b_crit_seeds_lo"])  # noqa: E731
    assert width(with_retunes) > 2 * width(alone)


def test_the_fit_needs_three_exact_medians():
    few = critical_batch({1.0: [Seeds.of([50.0, 60.0], [False, False])], 2.0: [Seeds.of([30.0, 31.0], [False] * 2)],
                          4.0: [Seeds.of([30.0, 30.0], [True, True])]}, resamples=10)
    assert math.isnan(few["b_crit"]) and few["n_batch_sizes"] == 2 and few["censored"] == 1
    one_seed = critical_batch({b: [Seeds.of([scaling_curve(b, 100, 10)], [False])] for b in (1.0, 4.0, 16.0, 64.0)},
                              resamples=10)
    assert one_seed["b_crit"] == pytest.approx(10, rel=1e-4) and math.isnan(one_seed["b_crit_seeds_lo"])


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0, 5.0], [0.4, 0.4, 0.1, 0.9, 0.25, 0.7],
                                    [2.0, math.nan, 1.0, math.nan, math.nan], [math.nan, 4.0], [2.0]])
def test_best_of_k_equals_brute_force_enumeration(values):
    """The lower median over every k-subset of the best finished value (a subset of failures only
    counts as +inf, or −inf when maximizing), and the share of subsets holding a finished trial."""
    for maximize in (False, True):
        fail = -math.inf if maximize else math.inf
        got = best_of_k(values, maximize)
        for k in range(1, len(values) + 1):
            subsets = list(itertools.combinations([fail if math.isnan(v) else v for v in values], k))
            bests = sorted((max(c) if maximize else min(c) for c in subsets), reverse=maximize)
            median = bests[math.ceil(len(bests) / 2) - 1]
            finished = np.mean([any(math.isfinite(v) for v in c) for c in subsets])
            assert got[k - 1][1] == pytest.approx(finished)
            assert (got[k - 1][0] == median) if math.isfinite(median) else math.isnan(got[k - 1][0])


def test_linear_rate_of_a_geometric_sequence_exact_and_log_binned():
    rho, optimum = 0.93, 0.01
    steps = np.arange(1, 3001)
    loss = optimum + 7.0 * rho ** (2 * steps)
    floor = 1e3 * np.finfo(float).eps * optimum  # below it, loss − optimum is rounding noise
    assert linear_rate(steps, np.ones_like(steps), loss - optimum, floor) == pytest.approx(rho, rel=1e-6)
    binned = bin_trace(array("d", loss), max_bins=64)  # wide bins: a bin's mean is not its midpoint's value
    assert binned["count"][-1] > 1
    rate = linear_rate(binned["step_lo"], binned["count"], np.array(binned["mean"]) - optimum, floor)
    assert rate == pytest.approx(rho, rel=1e-6)


def test_linear_rate_stops_at_the_float_floor():
    steps = np.arange(1, 201)
    excess = np.maximum(0.5 ** (2 * steps), 1e-15) + np.where(steps > 30, 1e-15 * np.sin(steps), 0)
    assert linear_rate(steps, np.ones_like(steps), excess, floor=1e-13) == pytest.approx(0.5, rel=1e-9)
    assert math.isnan(linear_rate([1, 2], [1, 1], [1.0, 0.5]))  # too short to fit


def test_rate_theory_at_the_optimal_parameters():
    for kappa in (10.0, 100.0):
        o = optimal_parameters(kappa, mu=2.0)
        L = 2 * kappa
        assert o["gd_lr"] == pytest.approx(2 / (L + 2))
        assert theory_rate("gd", o["gd_lr"], 0.0, L, 2.0) == pytest.approx((kappa - 1) / (kappa + 1))
        root = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
        assert o["hb_momentum"] == pytest.approx(root ** 2)
        assert theory_rate("heavy_ball", o["hb_lr"], o["hb_momentum"], L, 2.0) == pytest.approx(root, rel=1e-6)
    assert theory_rate("gd", 0.5, 0.0, 4.0, 1.0) == 1.0  # η = 2/L: the top direction does not contract
    assert math.isnan(theory_rate("adam", 0.1, 0.0, 4.0, 1.0))


def test_heavy_ball_rate_is_the_spectral_radius_of_its_iteration():
    lr, beta, L, mu = 0.05, 0.8, 20.0, 2.0
    radius = max(max(abs(np.linalg.eigvals(np.array([[1 + beta - lr * lam, -beta], [1.0, 0.0]])))) for lam in (mu, L))
    assert theory_rate("heavy_ball", lr, beta, L, mu) == pytest.approx(radius)


def test_lr_slope_is_least_squares_with_a_t_interval():
    sizes, lrs = [1, 2, 4, 8, 16], [0.01, 0.021, 0.038, 0.085, 0.15]
    slope, lo, hi = lr_slope(sizes, lrs, 0.95)
    ref = stats.linregress(np.log(sizes), np.log(lrs))
    half = stats.t.ppf(0.975, 3) * ref.stderr
    assert (slope, lo, hi) == pytest.approx((ref.slope, ref.slope - half, ref.slope + half))
    assert all(math.isnan(v) for v in lr_slope(sizes[:3], lrs[:3]))  # not enough points
    assert all(math.isnan(v) for v in lr_slope([1, 1, 2, 2, 4], lrs))  # three distinct batch sizes


def test_divergence_boundary_is_the_geometric_mean_around_the_first_diverged_lr():
    lrs = pd.Series([0.01, 0.05, 0.09, 0.11, 0.2, 0.07])
    diverged = pd.Series([False, False, False, True, True, False])
    assert divergence_boundary(lrs, diverged) == pytest.approx((0.11, math.sqrt(0.09 * 0.11)))
    assert all(math.isnan(v) for v in divergence_boundary(lrs, diverged & False))
