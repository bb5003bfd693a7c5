"""Statistics over seeds: mean, standard deviation, n and a Student-t confidence interval,
paired differences between two experiments run with the same seeds, and what such intervals
leave out: the multiplicity of a table of them and the sampling of the test images."""

import math

import numpy as np
from scipy import stats


def describe(values, confidence: float = 0.95) -> dict:
    """mean, sd (n - 1), n and the two-sided Student-t interval of the mean; with one value
    the spread is unknown and sd and the interval are None."""
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    out = {"mean": float(x.mean()), "sd": None, "n": n, "ci_low": None, "ci_high": None}
    if n >= 2:
        sd = float(x.std(ddof=1))
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
        out.update(sd=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def paired(a: dict, b: dict, confidence: float = 0.95) -> dict | None:
    """a - b over the seeds both have ({seed: value} each): the paired difference, described;
    None when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return {**describe([a[s] - b[s] for s in seeds], confidence), "seeds": seeds}


def joint_level(comparisons: int, confidence: float = 0.95) -> float:
    """The per-comparison confidence at which `comparisons` intervals hold jointly at
    `confidence` (Bonferroni): each 95% interval alone says nothing of a table of them."""
    return 1 - (1 - confidence) / comparisons


def binomial_se(accuracy: float, n_test: int) -> float:
    """The standard error of one run's accuracy measured on `n_test` test images: the spread
    that intervals over seeds, all measured on the same images, leave out."""
    return math.sqrt(accuracy * (1 - accuracy) / n_test)
