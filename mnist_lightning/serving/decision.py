"""The A/B decision: is the candidate's accuracy on labelled answers better or worse than the main model's?

The test. Each labelled answer is right or wrong; the two models' accuracies are compared with the two-sided
two-proportion z-test (pooled variance), and their difference (candidate minus main) gets Newcombe's hybrid score
interval (Wilson intervals of each accuracy, combined; Newcombe 1998, method 10), which stays inside [-1, 1] and
keeps its coverage near 0 and 1 accuracy, where MNIST models live. Assumptions: labels are independent Bernoulli
outcomes (one label per answer; a client that labels many answers makes them less independent than that), and the
two arms see the same kind of images (clients are split by a hash of their id, not by what they send).

Peeking. /ab is a dashboard: looked at after every label, a test at alpha 0.05 would call a difference sooner or
later by chance alone. So the test is only taken at fixed looks, when each arm has first_look, 2 x first_look,
4 x first_look ... labels, on exactly the first that many labels of each arm, and look k spends alpha / 2^(k+1) of
the error rate (alpha/2, alpha/4, ...: Bonferroni over every look there will ever be, which sums to alpha). The
first look that decides is the verdict, and later labels do not change it: a sequential test that stops there.
Between looks the figures on all labels so far are shown, with the labels each arm needs for a difference of the
size observed to be decided at a later look (power 0.8).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

POWER = 0.8
MAX_LOOKS = 40  # first_look x 2^40 labels: no A/B test gets there
NORMAL = NormalDist()


def wilson(correct: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(correct_a: int, n_a: int, correct_b: int, n_b: int, alpha: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p_a - p_b at confidence 1 - alpha."""
    z = NORMAL.inv_cdf(1 - alpha / 2)
    p_a, p_b = correct_a / n_a, correct_b / n_b
    low_a, high_a = wilson(correct_a, n_a, z)
    low_b, high_b = wilson(correct_b, n_b, z)
    difference = p_a - p_b
    return (
        difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
        difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2),
    )


def p_value(correct_a: int, n_a: int, correct_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of p_a = p_b."""
    pooled = (correct_a + correct_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:  # both all right (or all wrong): no difference to see
        return 1.0
    z = (correct_a / n_a - correct_b / n_b) / spread
    return math.erfc(abs(z) / math.sqrt(2))  # 2 x the upper tail; NormalDist.cdf would round it to 0 far out


def labels_needed(p_a: float, p_b: float, alpha: float, power: float = POWER) -> float:
    """Labels per arm for the z-test at `alpha` to find a difference p_a - p_b with probability `power`."""
    difference = abs(p_a - p_b)
    if difference == 0:
        return math.inf
    pooled = (p_a + p_b) / 2
    spread = NORMAL.inv_cdf(1 - alpha / 2) * math.sqrt(2 * pooled * (1 - pooled)) + NORMAL.inv_cdf(power) * math.sqrt(
        p_a * (1 - p_a) + p_b * (1 - p_b)
    )
    return (spread / difference) ** 2


def looks(first_look: int, alpha: float):
    """(labels per arm, alpha) of every look: first_look x 2^k, alpha / 2^(k+1)."""
    return [(first_look * 2**k, alpha / 2 ** (k + 1)) for k in range(MAX_LOOKS)]


def decide(main: np.ndarray, candidate: np.ndarray, alpha: float = 0.05, first_look: int = 100) -> dict:
    """The verdict on the candidate from each arm's outcomes (1 right, 0 wrong) in the order the labels came.

    Returns the figures the verdict was taken on (`labels_per_arm`, the look's `alpha`, `difference`,
    `interval`, `p_value`), or, while undecided, those on every label so far with `more_labels_per_arm`: about
    how many more each arm needs for a difference of the observed size (None: no difference observed yet)."""
    main, candidate = np.asarray(main, dtype=np.int64), np.asarray(candidate, dtype=np.int64)
    have = min(len(main), len(candidate))
    for k, (n, look_alpha) in enumerate(looks(first_look, alpha)):
        if n > have:
            break
        right_c, right_m = int(candidate[:n].sum()), int(main[:n].sum())
        p = p_value(right_c, n, right_m, n)
        if p < look_alpha:
            verdict = "candidate better" if right_c > right_m else "candidate worse"
            return figures(verdict, right_m, n, right_c, n, look_alpha, p, look=k + 1)
    passed = sum(1 for n, _ in looks(first_look, alpha) if n <= have)
    right_m, right_c, n_m, n_c = int(main.sum()), int(candidate.sum()), len(main), len(candidate)
    upcoming = looks(first_look, alpha)[passed:]
    report = figures("undecided", right_m, n_m, right_c, n_c, upcoming[0][1], None, look=None)
    more = None
    if n_m and n_c and report["difference"] != 0:
        p_m, p_c = right_m / n_m, right_c / n_c
        for n, look_alpha in upcoming:
            if n >= labels_needed(p_c, p_m, look_alpha):
                more = n - have
                break
    report["more_labels_per_arm"] = more
    report["next_look"] = upcoming[0][0]
    return report


def figures(verdict, right_m, n_m, right_c, n_c, look_alpha, p, look) -> dict:
    if not (n_m and n_c):
        difference, interval = None, None
    else:
        difference = round(right_c / n_c - right_m / n_m, 6)
        interval = [round(bound, 6) for bound in newcombe(right_c, n_c, right_m, n_m, look_alpha)]
        if p is None:
            p = p_value(right_c, n_c, right_m, n_m)
    return {
        "verdict": verdict,
        "look": look,
        "labels": {"main": n_m, "candidate": n_c},
        "accuracy": {
            "main": round(right_m / n_m, 6) if n_m else None,
            "candidate": round(right_c / n_c, 6) if n_c else None,
        },
        "difference": difference,
        "interval": interval,
        "confidence": round(1 - look_alpha, 6),
        "p_value": None if p is None else float(f"{p:.3g}"),  # three significant digits: 1.2e-20, not 0.0
        "more_labels_per_arm": None,
        "next_look": None,
    }
