"""paired_bootstrap: a seeded paired bootstrap of metric differences between two models on the same rows.

A resample is represented by how often each row was drawn (a multinomial count vector), so every
metric of `metrics.scores` is computed for a whole block of resamples at once as a weighted metric:
one matrix product instead of one sklearn call per resample (1000 resamples of 1,400 rows: ~0.1 s
instead of ~8 s). The weighted metrics are `mlops.metrics.weighted`, the definition `metrics.scores`
uses with unit weights (the tests check random count vectors against sklearn's `sample_weight`).
"""

from __future__ import annotations

import numpy as np

from mlops.metrics import weighted

BLOCK = 128  # resamples per block (memory: BLOCK x rows floats)


def paired_differences(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    metrics: dict[str, tuple[float, float]],
    samples: int,
    seed: int,
    bins: int,
    top_k: int = 2,
) -> dict[str, np.ndarray]:
    """metric(a) - metric(b) on each of `samples` seeded resamples of the same rows for both models.

    Args:
        y: 0/1 labels; p_a, p_b: the two models' probabilities on the same rows.
        metrics: metric name -> (threshold of a, threshold of b).
        samples: number of resamples; seed: the RNG seed (same seed, same intervals).
        bins: calibration bins (ece); top_k: multiclass top_k_accuracy's k.

    Returns:
        metric name -> differences, one per resample where the metric is defined for both models.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    out: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    done = 0
    while done < samples:
        k = min(BLOCK, samples - done)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(np.float64)
        for name, (t_a, t_b) in metrics.items():
            d = weighted(name, y, p_a, w, t_a, bins, top_k) - weighted(name, y, p_b, w, t_b, bins, top_k)
            out[name].append(d[np.isfinite(d)])
        done += k
    return {m: np.concatenate(v) for m, v in out.items()}
