"""Layer-wise spectral diagnostics of trained weights, as heavy-tailed self-regularization measures.

For each weight matrix W (N x M, N >= M) the empirical spectral density (ESD) is the set of
eigenvalues of the correlation matrix X = W^T W, i.e. the squared singular values of W. Trained
layers have heavy-tailed ESDs; the tail's power-law exponent alpha (density ~ lambda^-alpha above
some lambda_min) is the layer's measure (Martin & Mahoney 2021, and the WeightWatcher tool):

  * alpha is fitted the way WeightWatcher fits it (its `WWFit`, the `powerlaw` package's method,
    Clauset, Shalizi & Newman 2009): for every candidate x_min among the eigenvalues (all but the
    largest), the continuous maximum-likelihood exponent alpha = 1 + n / sum(ln(lambda_i / x_min))
    over the n eigenvalues >= x_min, and the Kolmogorov-Smirnov distance D between their empirical
    CDF and the fitted power law's; the x_min with the smallest D wins. (The `powerlaw` package
    additionally discards candidates with alpha >= 3 by default; WeightWatcher's fit does not, nor
    does this one. tests/test_study_spectra.py checks agreement with the package where they meet.)
  * Convolution kernels (H, W, C_in, C_out) are cut as WeightWatcher cuts them: one C_out x C_in
    matrix per kernel tap (H*W of them), whose eigenvalues are pooled into one ESD.
  * Spectral entropy: the Shannon entropy of p_i = lambda_i / sum(lambda), divided by ln(number of
    eigenvalues) (WeightWatcher's normalized "matrix entropy"; 1 = flat spectrum, 0 = rank one).
  * L2 norm: the Frobenius norm of the whole parameter tensor.
  * A tail fitted to a handful of eigenvalues is noise: below `MIN_EIGENVALUES` (10, WeightWatcher's
    `min_evals` default) a layer gets no alpha (NaN, with the reason in `alpha_note`); its entropy
    and norm are still reported. Examples: the first 3x3 convolution of a grayscale network (9 taps
    of one input channel: 9 eigenvalues), the token MLPs of a Mixer over 4 tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Eigenvalues at or below this fraction of the largest are numerical zeros (rank deficiency).
_ZERO_EIGENVALUE = 1e-10
# Fewest eigenvalues a layer needs for its alpha (WeightWatcher's DEFAULT_MIN_EVALS).
MIN_EIGENVALUES = 10


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  alpha: float  # exponent of the density p(x) ~ x^-alpha for x >= xmin
  xmin: float
  ks_distance: float
  num_tail: int  # eigenvalues >= xmin


def fit_power_law(values: np.ndarray) -> PowerLawFit:
  """Clauset MLE exponent with x_min chosen by the smallest KS distance (continuous data).

  Needs at least three distinct positive values; returns NaNs otherwise.
  """
  x = np.sort(np.asarray(values, np.float64))
  x = x[x > 0]
  n = len(x)
  candidates = np.unique(x)[:-1]  # the largest value cannot start a tail
  if len(candidates) < 2:
    return PowerLawFit(float("nan"), float("nan"), float("nan"), 0)
  starts = np.searchsorted(x, candidates, side="left")  # first index of each candidate
  logs = np.log(x)
  # sum_{i >= k} ln x_i for every start k, then the MLE for every candidate at once.
  tail_log_sums = np.cumsum(logs[::-1])[::-1]
  tail_counts = n - starts
  alphas = 1.0 + tail_counts / (tail_log_sums[starts] - tail_counts * np.log(candidates))
  # KS distance of each candidate's tail. The empirical CDF at x_j (j >= k) counts the tail values
  # strictly below it, (j - k) / (n - k), as the `powerlaw` package does (ties share the lowest).
  distances = np.empty(len(candidates))
  rank_below = np.searchsorted(x, x, side="left")
  for i, (k, xmin, alpha) in enumerate(zip(starts, candidates, alphas)):
    tail = x[k:]
    empirical = (rank_below[k:] - k) / (n - k)
    fitted = 1.0 - (tail / xmin) ** (1.0 - alpha)
    distances[i] = np.max(np.abs(fitted - empirical))
  best = int(np.argmin(distances))
  return PowerLawFit(float(alphas[best]), float(candidates[best]), float(distances[best]),
                     int(tail_counts[best]))


def matrices(tensor: np.ndarray) -> list[np.ndarray]:
  """The matrices of a weight tensor: a dense kernel itself, a conv kernel one per tap (HWIO).

  Each is oriented N x M with N >= M. Other ranks (biases, norms, embeddings tables of rank 3)
  have no matrix and give [].
  """
  tensor = np.asarray(tensor, np.float64)
  if tensor.ndim == 2:
    slices = [tensor]
  elif tensor.ndim == 4:
    height, width = tensor.shape[:2]
    slices = [tensor[i, j] for i in range(height) for j in range(width)]
  else:
    return []
  return [m if m.shape[0] >= m.shape[1] else m.T for m in slices]


def eigenvalues(tensor: np.ndarray) -> np.ndarray:
  """The pooled ESD of a weight tensor's matrices: squared singular values, ascending."""
  mats = matrices(tensor)
  if not mats:
    return np.zeros((0,))
  values = np.concatenate([np.linalg.svd(m, compute_uv=False) ** 2 for m in mats])
  values = values[values > _ZERO_EIGENVALUE * max(values.max(initial=0.0), 1e-300)]
  return np.sort(values)


def spectral_entropy(values: np.ndarray) -> float:
  """Shannon entropy of the normalized eigenvalues, divided by its maximum ln(count)."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float("nan")
  p = values / values.sum()
  p = p[p > 0]
  return float(-(p * np.log(p)).sum() / np.log(len(values)))


def layer_diagnostics(tensor: np.ndarray, min_eigenvalues: int = MIN_EIGENVALUES
                      ) -> dict[str, float] | None:
  """alpha (and its x_min, KS distance, tail size), spectral entropy, L2 norm; None if no matrix.

  With fewer than `min_eigenvalues` (nonzero) eigenvalues, alpha, x_min and the KS distance are
  NaN and `alpha_note` says why; otherwise `alpha_note` is "".
  """
  values = eigenvalues(tensor)
  if len(values) == 0:
    return None
  if len(values) < min_eigenvalues:
    fit = PowerLawFit(float("nan"), float("nan"), float("nan"), 0)
    note = f"{len(values)} eigenvalues < {min_eigenvalues}: too few for a power-law fit"
  else:
    fit, note = fit_power_law(values), ""
  return {"alpha": fit.alpha, "xmin": fit.xmin, "ks_distance": fit.ks_distance,
          "num_tail": fit.num_tail, "num_eigenvalues": len(values), "alpha_note": note,
          "entropy": spectral_entropy(values),
          "norm": float(np.linalg.norm(np.asarray(tensor, np.float64)))}
