"""A small logistic-regression model fitted on synthetic data with NumPy (Newton's method)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ("amount", "age", "tenure_months", "num_products")
# Mean and standard deviation of each feature in the training data.
MEANS = np.array([250.0, 42.0, 36.0, 2.0])
STDS = np.array([120.0, 12.0, 24.0, 1.0])
# Strong enough that the fitted model is right on ~89% of healthy traffic: above the mixin's
# default ModelmonAccuracyLow threshold (performance.accuracy_min, 0.8), so the demo's healthy
# model does not page; weaker coefficients made the labels near coin flips (~75% at best).
_TRUE_COEF = np.array([3.6, -1.8, -2.4, 1.5])


def sample_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows drawn from the training distribution."""
    return np.asarray(MEANS + STDS * rng.standard_normal((n, len(FEATURES))))


def true_labels(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    z = ((x - MEANS) / STDS) @ _TRUE_COEF - 0.3
    return np.asarray(rng.random(len(x)) < 1.0 / (1.0 + np.exp(-z)), dtype=np.int64)


@dataclass(frozen=True)
class LogisticModel:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, coef=self.coef,
                 intercept=np.array([self.intercept]))

    @classmethod
    def load(cls, path: Path) -> LogisticModel:
        with np.load(path) as f:
            return cls(f["mean"], f["scale"], f["coef"], float(f["intercept"][0]))


def fit(x: np.ndarray, y: np.ndarray, iterations: int = 25) -> LogisticModel:
    """Maximum-likelihood logistic regression by Newton-Raphson on standardised features."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        gradient = z.T @ (y - p)
        hessian = (z * (p * (1 - p))[:, None]).T @ z + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return LogisticModel(mean, scale, w[1:], float(w[0]))


def train(seed: int = 7, n: int = 5000) -> tuple[LogisticModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = sample_features(rng, n)
    y = true_labels(rng, x)
    return fit(x, y), x, y
