"""The batch-size science's math on constructed data with known answers: the critical-batch fit
and its bootstrap interval, expected best-of-k against brute force, linear rates from exact and
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
    batch_scaling,
    divergence_boundary,
    expected_best_of_k,
    linear_rate,
    lr_slope,
    optimal_parameters,
    scaling_curve,
    theory_rate,
)
from suite.train.trace import bin_trace


@pytest.mark.parametrize("s_min, b_crit", [(1000.0, 64.0), (250.0, 8.0)])
def test_critical_batch_fit_recovers_a_known_curve_within_its_interval(s_min, b_crit):
    rng = np.random.default_rng(3)
    sizes = 2.0 ** np.arange(0, 11)
    per_batch = {b: scaling_curve(b, s_min, b_crit) * np.exp(rng.normal(0, 0.08, 6)) for b in sizes}
    fit = batch_scaling(per_batch, resamples=300, confidence=0.95, seed=0)
    assert fit["b_crit_lo"] <= b_crit <= fit["b_crit_hi"] and fit["s_min_lo"] <= s_min <= fit["s_min_hi"]
    assert fit["b_crit"] == pytest.approx(b_crit, rel=0.25) and fit["s_min"] == pytest.approx(s_min, rel=0.1)
    assert fit["e_min"] == pytest.approx(fit["s_min"] * fit["b_crit"])
    assert fit["n_batch_sizes"] == len(sizes) and fit["censored"] == 0 and fit["fit_rmse_log"] < 0.1


def test_critical_batch_fit_leaves_out_censored_batch_sizes_and_needs_three():
    curve = {b: [scaling_curve(b, 100, 10)] * 3 for b in (1.0, 4.0, 16.0, 64.0)}
    curve[64.0] = [math.inf, math.nan, 30.0]  # median censored: left out
    fit = batch_scaling(curve, resamples=50)
    assert fit["n_batch_sizes"] == 3 and fit["censored"] == 1
    assert fit["b_crit"] == pytest.approx(10, rel=1e-4) and fit["s_min"] == pytest.approx(100, rel=1e-4)
    few = batch_scaling({1.0: [50.0, 60.0], 2.0: [30.0, 31.0]}, resamples=10)
    assert math.isnan(few["b_crit"]) and few["n_batch_sizes"] == 2
    one_seed = batch_scaling({b: [v[0]] for b, v in curve.items()}, resamples=10)
    assert not math.isnan(one_seed["b_crit"]) and math.isnan(one_seed["b_crit_lo"])  # no interval from one seed


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0, 5.0], [0.4, 0.4, 0.1, 0.9, 0.25, 0.7], [2.0]])
def test_expected_best_of_k_equals_brute_force_enumeration(values):
    for maximize, pick in ((False, min), (True, max)):
        exact = expected_best_of_k(values, maximize)
        brute = [np.mean([pick(c) for c in itertools.combinations(values, k)]) for k in range(1, len(values) + 1)]
        assert exact == pytest.approx(brute, rel=1e-12)


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
    two = lr_slope([1, 4], [0.1, 0.2])
    assert two[0] == pytest.approx(0.5) and math.isnan(two[1])


def test_divergence_boundary_is_the_geometric_mean_around_the_first_diverged_lr():
    lrs = pd.Series([0.01, 0.05, 0.09, 0.11, 0.2, 0.07])
    diverged = pd.Series([False, False, False, True, True, False])
    assert divergence_boundary(lrs, diverged) == pytest.approx((0.11, math.sqrt(0.09 * 0.11)))
    assert all(math.isnan(v) for v in divergence_boundary(lrs, diverged & False))
