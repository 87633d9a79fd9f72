"""The A/B decision's statistics (serving/decision.py): Newcombe's interval against its paper, and the error rates
of the looks design simulated: a dashboard peeked at after every label still calls a false difference at most
alpha of the time, where a plain test at every look would call one far more often."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_lightning.serving.decision import decide, labels_needed, looks, newcombe, p_value


def test_newcombes_interval_matches_his_paper():
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 vs 48/80 -> 0.0524 to 0.3339 (method 10)
    low, high = newcombe(56, 70, 48, 80, alpha=0.05)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    low, high = newcombe(9, 10, 3, 10, alpha=0.05)  # (h) in the same table: 0.1705 to 0.8090
    assert (round(low, 4), round(high, 4)) == (0.1705, 0.8090)


def test_the_p_value_is_the_pooled_z_test():
    assert p_value(56, 70, 48, 80) == pytest.approx(0.0080, abs=1e-4)  # pooled 104/150: z = 0.2 / 0.0755 = 2.65
    assert p_value(100, 100, 100, 100) == 1.0  # no spread, no difference


def test_peeking_at_every_look_keeps_false_verdicts_under_alpha():
    rng = np.random.default_rng(0)
    runs, n, alpha = 2000, 3200, 0.05
    same = rng.random((runs, 2, n)) < 0.95  # two arms with the same accuracy
    false_verdicts = sum(decide(a, b, alpha, first_look=100)["verdict"] != "undecided" for a, b in same)
    naive = 0  # a test at alpha at every look, stopping at the first significant one
    for a, b in same:
        naive += any(p_value(int(b[:k].sum()), k, int(a[:k].sum()), k) < alpha for k, _ in looks(100, alpha)[:6])
    assert false_verdicts / runs <= alpha, false_verdicts
    assert naive / runs > 1.5 * alpha, naive  # what the alpha spending protects against


def test_a_real_difference_is_decided_and_the_labels_needed_are_about_right():
    rng = np.random.default_rng(1)
    main, candidate = rng.random(4000) < 0.90, rng.random(4000) < 0.95
    early = decide(main[:150], candidate[:150])
    assert early["verdict"] == "undecided" and early["next_look"] == 200
    more = early["more_labels_per_arm"]
    assert more is not None and more > 0
    needed = labels_needed(0.95, 0.90, 0.05 / 2**3)  # the power calculation behind it, at look 3's alpha
    assert 300 < needed < 1200
    decided = [decide(rng.random(4000) < 0.90, rng.random(4000) < 0.95)["verdict"] for _ in range(200)]
    assert decided.count("candidate better") > 0.8 * 200 and "candidate worse" not in decided
    worse = decide(candidate, main)
    assert worse["verdict"] == "candidate worse" and worse["difference"] < 0 and worse["interval"][1] < 0
