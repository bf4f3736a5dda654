"""A small Gaussian process: the surrogate the ``ehvi`` sampler fits to the finished trials.

numpy only: scipy is no dependency of this tool (Optuna's own GPSampler needs it and torch's
autograd). Inputs live in the unit box (the searched axes on their log scale), the output is
standardised; the kernel is Matern 5/2 with one length scale per input, the mean constant, the
noise Gaussian. The length scales and the noise are the pair of a small grid with the largest
log marginal likelihood: enough for the two inputs and the tens to hundreds of trials a sweep
has, and a fit costs milliseconds, well below the half second of the shortest trials.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

LENGTHS = (0.08, 0.15, 0.3, 0.6, 1.2, 2.5)  # in units of the input box's side
NOISES = (1e-4, 1e-3, 1e-2, 0.05, 0.2)  # variance, in units of the output's variance
SELECT_AT_MOST = 80  # points that choose the length scales and the noise (the fit uses all)


def matern52(a: np.ndarray, b: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The Matern 5/2 kernel matrix of the rows of ``a`` against the rows of ``b``."""
    scaled = (a[:, None, :] - b[None, :, :]) / lengths
    r = math.sqrt(5.0) * np.sqrt((scaled**2).sum(-1))
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z), to 1.5e-7 (Abramowitz and Stegun 7.1.26 for erf): no scipy."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))  # fmt: skip
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def expected_improvement(mean: np.ndarray, sd: np.ndarray, level: np.ndarray) -> np.ndarray:
    """E[max(0, Y - level)] for Y ~ N(mean, sd^2), elementwise (broadcast)."""
    sd = np.maximum(sd, 1e-12)
    z = (mean - level) / sd
    return (mean - level) * normal_cdf(z) + sd * normal_pdf(z)


def select(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, float]:
    """The (length scales, noise) of the grid with the largest log marginal likelihood of the
    standardised outputs ``z``. Past ``SELECT_AT_MOST`` points an evenly spread subset decides,
    which bounds a selection to tens of milliseconds however long the study (a Cholesky
    factor per pair: on these sizes faster than one eigendecomposition per set of lengths)."""
    if len(x) > SELECT_AT_MOST:
        keep = np.linspace(0, len(x) - 1, SELECT_AT_MOST).round().astype(int)
        x, z = x[keep], z[keep]
    best, choice = -math.inf, (np.full(x.shape[1], LENGTHS[-1]), NOISES[-1])
    eye = np.eye(len(x))
    for lengths in itertools.product(LENGTHS, repeat=x.shape[1]):
        lengths = np.asarray(lengths)
        kernel = matern52(x, x, lengths)
        for noise in NOISES:
            try:
                chol = np.linalg.cholesky(kernel + noise * eye)
            except np.linalg.LinAlgError:
                continue
            half = np.linalg.solve(chol, z)  # L^-1 z: z' (K + noise I)^-1 z = |L^-1 z|^2
            fit = -0.5 * half @ half - np.log(np.diag(chol)).sum()
            if fit > best:
                best, choice = fit, (lengths, noise)
    return choice


@dataclass(frozen=True)
class GaussianProcess:
    """A fitted process: ``predict`` gives the mean and standard deviation at new inputs."""

    x: np.ndarray  # (n, d) inputs in the unit box
    lengths: np.ndarray  # (d,)
    noise: float
    offset: float  # the outputs' mean and scale: predictions are in the outputs' units
    scale: float
    chol: np.ndarray  # Cholesky factor of K + noise I
    alpha: np.ndarray  # (K + noise I)^-1 y, y standardised

    @classmethod
    def fit(cls, x, y) -> GaussianProcess:
        """Fit to ``y`` at ``x`` (n >= 1 rows): length scales and noise by marginal likelihood."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        offset = float(y.mean())
        scale = float(y.std()) or 1.0
        z = (y - offset) / scale
        lengths, noise = select(x, z)
        kernel = matern52(x, x, lengths) + noise * np.eye(len(x))
        chol = np.linalg.cholesky(kernel)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        return cls(x, lengths, noise, offset, scale, chol, alpha)

    def believing(self, x) -> GaussianProcess:
        """The process conditioned on outputs at ``x`` equal to its own predicted mean there
        (the "kriging believer": points still being evaluated): the mean is unchanged, the
        uncertainty near them shrinks as if they were measured. Same length scales, noise and
        output scale."""
        x = np.asarray(x, float)
        if not len(x):
            return self
        mean = matern52(x, self.x, self.lengths) @ self.alpha  # standardised
        both = np.concatenate([self.x, x])
        z = np.concatenate([self.chol @ (self.chol.T @ self.alpha), mean])  # (K + noise I) alpha
        kernel = matern52(both, both, self.lengths) + self.noise * np.eye(len(both))
        chol = np.linalg.cholesky(kernel)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        return GaussianProcess(both, self.lengths, self.noise, self.offset, self.scale, chol, alpha)

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the (noise-free) output at ``x``, in the outputs' units."""
        x = np.asarray(x, float)
        cross = matern52(x, self.x, self.lengths)
        mean = cross @ self.alpha
        v = np.linalg.solve(self.chol, cross.T)
        var = np.maximum(1.0 - (v * v).sum(0), 1e-12)
        return self.offset + self.scale * mean, self.scale * np.sqrt(var)
