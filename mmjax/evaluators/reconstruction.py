"""Image reconstruction metrics: PSNR and SSIM (Wang et al. 2004, the 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, as in skimage's `gaussian_weights=True` / TF's `tf.image.ssim`).

Images are [..., H, W, C] arrays in [0, max_val]; results are averaged over the leading axes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def psnr(a: np.ndarray, b: np.ndarray, max_val: float = 1.0) -> float:
  """Mean over images of 10 log10(max_val^2 / MSE) (inf for identical images)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mse = np.mean((a - b) ** 2, axis=(-3, -2, -1))
  with np.errstate(divide="ignore"):
    return float(np.mean(10 * np.log10(max_val ** 2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray, max_val: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> float:
  """Mean SSIM over images, channels and valid window positions."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a = a.reshape(-1, *a.shape[-3:])
  b = b.reshape(-1, *b.shape[-3:])
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  # truncate=3.5 gives the 11-tap window of the reference implementation.
  blur = lambda x: ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), truncate=3.5,
                                           mode="reflect")
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) *
                                                   (var_a + var_b + c2))
  pad = 5  # Drop the border where the window leaves the image (skimage's crop).
  return float(np.mean(s[:, pad:-pad, pad:-pad, :]))
