"""Scores for sets of generated 8x8 digits, with nothing downloaded: a small classifier trained on the
digits' training split (``ddpm_core.training.digits``) is the feature extractor, as Inception-v3 is for FID/KID.

  * ``DigitClassifier``: scikit-learn's ``MLPClassifier`` (one hidden layer of ``HIDDEN`` ReLUs, fixed
    ``random_state``) on the 64 pixels in [0, 1]; its hidden activations are the features.
  * ``kid``: the kernel inception distance of Binkowski et al. (2018): the unbiased estimate of MMD^2 with
    the cubic polynomial kernel ``k(x, y) = (x . y / d + 1) ** 3`` on the features. 0 for two samples of
    one distribution (on average: single estimates fall on both sides of 0).
  * ``set_scores``: what the classifier says about one set: confidence, the share it reads as a digit with
    confidence >= ``CONFIDENT``, class coverage and balance.

Everything is numpy after the classifier is fitted, and deterministic.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ddpm_core.training.digits import CLASSES, load_split

HIDDEN = 128
CONFIDENT = 0.9
COVERED_SHARE = 0.02
"""A class counts as covered when at least this share of the samples is classified as it (uniform: 0.10)."""


class DigitClassifier:
    """An MLP fitted to the training split of the digits; ``heldout_accuracy`` is measured on the other 300."""

    def __init__(self, seed: int = 0):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        train, heldout = load_split("train"), load_split("heldout")
        self.mlp = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=400, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp.fit(flat(train.images), train.labels)
        self.heldout_accuracy = float((self.mlp.predict(flat(heldout.images)) == heldout.labels).mean())

    def features(self, images01: np.ndarray) -> np.ndarray:
        """The hidden layer's activations (N, HIDDEN), float64, for images (N, 1, 8, 8) in [0, 1]."""
        return np.maximum(flat(images01) @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0.0)

    def probabilities(self, images01: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10)."""
        return self.mlp.predict_proba(flat(images01))


def flat(images01: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) -> (N, H*W) float64."""
    images01 = np.asarray(images01, np.float64)
    return images01.reshape(images01.shape[0], -1)


def kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between feature sets ``x`` (m, d) and ``y`` (n, d) under ``(x . y / d + 1) ** 3``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    if m < 2 or n < 2 or y.shape[1] != d:
        raise ValueError(f"kid needs two sets of >= 2 vectors of one width, got {x.shape} and {y.shape}")
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


@dataclass(frozen=True)
class SetScores:
    """The classifier's view of one set of images."""

    n: int
    confidence: float  # mean of the top class probability
    confident_share: float  # share with top probability >= CONFIDENT
    classes_covered: int  # classes that take >= COVERED_SHARE of the samples
    smallest_class_share: float
    largest_class_share: float
    class_shares: tuple[float, ...]


def set_scores(probabilities: np.ndarray) -> SetScores:
    top = probabilities.max(axis=1)
    shares = np.bincount(probabilities.argmax(axis=1), minlength=CLASSES) / probabilities.shape[0]
    return SetScores(int(probabilities.shape[0]), float(top.mean()), float((top >= CONFIDENT).mean()),
                     int((shares >= COVERED_SHARE).sum()), float(shares.min()), float(shares.max()),
                     tuple(float(s) for s in shares))
