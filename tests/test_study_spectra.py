"""Layer-wise spectral diagnostics: ESDs of known spectra, the power-law fit against `powerlaw`."""

import warnings

import numpy as np
import powerlaw
import pytest

from jaxlab.study import spectra


def _pareto(rng, exponent: float, n: int, xmin: float = 1.0) -> np.ndarray:
  """Samples with density ~ x^-exponent above xmin (inverse-CDF sampling)."""
  return xmin * (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))


def _matrix_with_eigenvalues(rng, eigenvalues: np.ndarray, rows: int) -> np.ndarray:
  """W (rows x M) whose W^T W has exactly these eigenvalues: a rectangular diagonal matrix of
  their square roots with rows and columns shuffled and signs flipped (singular values unchanged)."""
  m = len(eigenvalues)
  weight = np.zeros((rows, m))
  weight[np.arange(m), np.arange(m)] = np.sqrt(eigenvalues) * rng.choice([-1.0, 1.0], m)
  return weight[rng.permutation(rows)][:, rng.permutation(m)]


@pytest.mark.parametrize("exponent", [2.0, 2.5])
def test_alpha_of_a_matrix_with_a_pareto_spectrum(exponent):
  rng = np.random.default_rng(int(exponent * 10))
  # A power-law tail above 1 plus a bulk below it that is not a power law.
  eigenvalues = np.concatenate([_pareto(rng, exponent, 400), rng.uniform(0.05, 0.9, 100)])
  weight = _matrix_with_eigenvalues(rng, eigenvalues, rows=600)
  np.testing.assert_allclose(spectra.eigenvalues(weight), np.sort(eigenvalues), rtol=1e-8)
  fit = spectra.fit_power_law(spectra.eigenvalues(weight))
  # Clauset's estimator has standard error (alpha - 1) / sqrt(n_tail) ~ 0.07 here.
  assert abs(fit.alpha - exponent) < 0.2, fit
  assert 0.9 <= fit.xmin <= 2.0 and fit.num_tail >= 200, fit  # the bulk below 1 is left out


def test_fit_agrees_with_the_powerlaw_package():
  rng = np.random.default_rng(3)
  for exponent, n in ((1.8, 400), (2.3, 800), (2.7, 300)):
    values = np.concatenate([_pareto(rng, exponent, n, xmin=0.5), rng.uniform(0.01, 0.4, n // 4)])
    ours = spectra.fit_power_law(values)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      reference = powerlaw.Fit(values, verbose=False)  # WeightWatcher's call: xmin by KS distance
    assert ours.xmin == pytest.approx(reference.xmin, rel=1e-12)
    assert ours.alpha == pytest.approx(reference.power_law.alpha, rel=1e-9)
    assert ours.ks_distance == pytest.approx(reference.power_law.D, rel=1e-9)


def test_conv_kernels_are_cut_into_one_matrix_per_tap():
  rng = np.random.default_rng(0)
  kernel = rng.standard_normal((3, 2, 5, 8))  # HWIO: 6 taps of 5 -> 8 channels
  expected = np.sort(np.concatenate(
      [np.linalg.svd(kernel[i, j], compute_uv=False) ** 2 for i in range(3) for j in range(2)]))
  np.testing.assert_allclose(spectra.eigenvalues(kernel), expected, rtol=1e-10)
  assert all(m.shape == (8, 5) for m in spectra.matrices(kernel))  # N >= M orientation
  assert spectra.matrices(np.ones((4,))) == [] and spectra.layer_diagnostics(np.ones((4,))) is None


def test_entropy_and_norm():
  assert spectra.spectral_entropy(np.ones(7)) == pytest.approx(1.0)
  assert spectra.spectral_entropy(np.array([3.0, 0.0, 0.0])) == pytest.approx(0.0)
  p = np.array([0.5, 0.25, 0.25])
  assert spectra.spectral_entropy(4 * p) == pytest.approx(-(p * np.log(p)).sum() / np.log(3))
  weight = np.arange(12.0).reshape(3, 4)
  found = spectra.layer_diagnostics(weight)
  assert found["norm"] == pytest.approx(np.sqrt((np.arange(12.0) ** 2).sum()))
  assert found["num_eigenvalues"] == 2  # rank 2: the third eigenvalue of W W^T is 0


def test_layers_with_too_few_eigenvalues_get_no_alpha():
  rng = np.random.default_rng(1)
  first_conv = rng.standard_normal((3, 3, 1, 32))  # 9 taps of a 32 x 1 matrix: 9 eigenvalues
  found = spectra.layer_diagnostics(first_conv)
  assert found["num_eigenvalues"] == 9 < spectra.MIN_EIGENVALUES
  assert np.isnan(found["alpha"]) and np.isnan(found["xmin"]) and found["num_tail"] == 0
  assert "9 eigenvalues < 10" in found["alpha_note"]
  assert 0.0 < found["entropy"] <= 1.0  # entropy and norm do not need a fit
  assert found["norm"] == pytest.approx(np.linalg.norm(first_conv))
  # The same kernel with a lower threshold, and a matrix with exactly 10 eigenvalues, get one.
  assert np.isfinite(spectra.layer_diagnostics(first_conv, min_eigenvalues=9)["alpha"])
  ten = spectra.layer_diagnostics(rng.standard_normal((30, 10)))
  assert ten["num_eigenvalues"] == 10 and np.isfinite(ten["alpha"]) and ten["alpha_note"] == ""
