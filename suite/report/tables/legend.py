"""How every table reads, stated once for the README: intervals of final metrics, medians of
counts to the target, failures, best and tied marks, the excess loss's floor, timings."""
from __future__ import annotations

from suite.report.stats.resolution import ROUNDOFF_MULTIPLE


def statistics_text(conf: float, alpha: float, individual_below: int) -> str:
    """The README's statement of the statistics every table uses."""
    return (f"**Final metrics**: the mean over seeds and, with several seeds, its {conf:.0%} Student-t interval "
            f"[lo, hi] (truncated to the values the metric can take: [0, 1] for an accuracy, ≥ 0 for losses). "
            f"**Counts to the target** (steps, epochs, samples, seconds): the median over all seeds, a seed that did "
            f"not reach the target counting as beyond the cap (the smallest count by which half of the seeds had "
            f"reached it), with the order-statistic (binomial) {conf:.0%} interval of the median (with fewer than 6 "
            f"seeds no such interval reaches {conf:.0%}: then [min, max], whose coverage the caption gives; an upper "
            f"end beyond the cap reads > cap; both ends are counts a seed took, never below one step); *censored* "
            f"when fewer than half of the seeds reached it, shown with the cap. A run *failed* when it diverged or "
            f"collapsed (finished with its validation loss not below its step-0 value, or its validation accuracy "
            f"below the untrained model's + 0.05); a cell with a failed seed reads \"k/n finished\" and is never best "
            f"or tied, and ranks after every cell whose seeds all finished (rankings, mean ranks, performance "
            f"profile). **Bold** marks the best of a row among the other cells (best mean; least median count); a "
            f"cell that a paired t-test over seeds (same seed = same data order and initialization for every "
            f"optimizer) against that best, Holm-corrected across the row at α = {alpha:g}, cannot separate "
            f"from it is marked tied (**≈ bold**); counts are tested as log counts with censored seeds at their "
            f"cap, which understates the cells with censored seeds and so can only add ties (where the best itself "
            f"has censored seeds, whose lead this would overstate, no cell is separated from it; a two-sided "
            f"Wilcoxon signed-rank test cannot reach p < 0.05 with 5 pairs). An excess loss within {ROUNDOFF_MULTIPLE} units "
            f"of float roundoff of the loss level (|x| ≤ {ROUNDOFF_MULTIPLE}·ε·ℓ*, ε the dtype's machine epsilon; "
            f"float32 evaluation of the "
            f"loss scatters within about ±7ε·ℓ* once converged) is *at floor*: such values are equal and none is "
            f"bold. Throughput and seconds to the target are compared only where every run trained alone (not "
            f"stacked, one worker); otherwise nothing is bold and `make bench` has the comparable timings. The CSVs "
            f"carry `best`, `tied_best` and `at_floor`. Figures draw every seed where there are fewer than "
            f"{individual_below}, else the mean with its t-interval band.")
