"""Real photographs for tests: the ones scikit-image ships, plus deterministic degradations."""
import numpy as np
import skimage.data


def photo(name: str, box=None) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if box is not None:
        top, left, h, w = box
        img = img[top:top + h, left:left + w]
    return np.ascontiguousarray(img)


def degraded_pair(name: str, kind: str):
    """(HR, degraded) uint8 RGB pair: seeded Gaussian noise or a 3x3 box blur."""
    hr = photo(name)
    if kind == "noise":
        noise = np.random.default_rng(0).normal(0.0, 8.0, hr.shape)
        deg = np.clip(hr + noise, 0, 255).round()
    else:
        pad = np.pad(hr.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
        deg = sum(pad[i:i + hr.shape[0], j:j + hr.shape[1]] for i in range(3) for j in range(3)) / 9
        deg = deg.round()
    return hr, deg.astype(np.uint8)
