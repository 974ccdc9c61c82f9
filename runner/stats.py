"""Confidence intervals over repetitions, and for proportions.

mean_ci: the mean of n repetitions and its 95 % interval from Student's t
with n - 1 degrees of freedom (the repetitions are the samples; what
happens inside one cell is summarised first). With n = 1 there is no
interval: low = high = mean, and n says so. With 3 repetitions t is 4.30:
intervals are wide, and the report says where they overlap rather than
calling a difference.
"""
import math

# Student's t, two-sided 95 % (0.975 quantile), degrees of freedom 1..30.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262,
        2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101,
        2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052,
        2.048, 2.045, 2.042)


def t975(df):
    if df < 1:
        return None
    if df <= len(T975):
        return T975[df - 1]
    return 1.960 + 2.4 / df       # within 0.003 of the exact value


def mean_ci(values):
    """{"n", "mean", "lo", "hi", "sd"} of the non-None values, or None."""
    v = [x for x in values if x is not None and not _nan(x)]
    if not v:
        return None
    n = len(v)
    mean = sum(v) / n
    if n == 1:
        return {"n": 1, "mean": mean, "lo": mean, "hi": mean, "sd": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    h = t975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "lo": mean - h, "hi": mean + h, "sd": sd}


def overlap(a, b):
    """True if two intervals (dicts with lo, hi) overlap."""
    return a["lo"] <= b["hi"] and b["lo"] <= a["hi"]


def wilson(k, n, z=1.96):
    """95 % Wilson interval of a proportion k/n: (p, lo, hi)."""
    if not n:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, max(0.0, c - h), min(1.0, c + h)


def _nan(x):
    return isinstance(x, float) and math.isnan(x)
