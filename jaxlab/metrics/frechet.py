"""Fréchet distance and kernel inception distance (KID) between two sets of features, in float64.

  FD  = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)   (Heusel et al. 2017)
  KID = unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
        (Bińkowski et al. 2018; subsets of 1000 as in their code and torch-fidelity)

Both are computed from features in float64 NumPy: float32 loses the small differences of large
covariance traces. The matrix square root goes through symmetric eigendecompositions (the
eigenvalues of S_1 S_2 are those of S_1^1/2 S_2 S_1^1/2, which is symmetric positive
semi-definite), so no complex parts or scipy are involved.

The number is "FID" only with InceptionV3 pool features (pytorch-fid's weights); with any other
feature extractor call it "FD-<extractor>" (`distance_name`).
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance with N - 1) of [N, D] features, in float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"features must be [N >= 2, D], got shape {features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"frechet_distance needs means [D] and covariances [D, D] of one D, got "
                     f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
  root1 = _psd_sqrt(sigma1)
  middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  trace_sqrt = np.sqrt(np.clip(middle, 0.0, None)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  d = x.shape[1]
  kxx = (x @ x.T / d + 1) ** 3
  kyy = (y @ y.T / d + 1) ** 3
  kxy = (x @ y.T / d + 1) ** 3
  m, n = len(x), len(y)
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2 * kxy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """(mean, std) over `subsets` random subsets of the unbiased MMD^2 with the cubic kernel."""
  x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"KID needs [N, D] and [M, D] features, got {x.shape} and {y.shape}")
  size = min(subset_size, len(x), len(y))
  if size < 2:
    raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
  rng = np.random.default_rng(seed)
  values = [_unbiased_mmd2(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
            for _ in range(subsets)]
  return float(np.mean(values)), float(np.std(values))


def distance_name(extractor: str) -> str:
  """'FID' for pytorch-fid's InceptionV3 features, 'FD-<extractor>' for anything else."""
  return "FID" if extractor == "inception_v3_fid" else f"FD-{extractor}"
