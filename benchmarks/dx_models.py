"""Models, data and pytorch-ood detectors of the diagnostics benchmark (``bench_diagnostics.py``).

Everything here needs torch (and pytorch-ood for :func:`ood_scores`); nothing
downloads: MNIST is read from ``NNSIG_DATA`` (torchvision layout) and the
far-out-of-distribution sets are derived from it, from noise, or from
scikit-learn's bundled 8x8 digits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MEAN, STD = 0.1307, 0.3081
FAR_SETS = ("inverted", "rot90", "uniform", "gaussian", "digits")


def load_mnist(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST train and test images (uint8, (n, 28, 28)) and labels, from ``root``."""
    import torchvision

    tr = torchvision.datasets.MNIST(root, train=True, download=False)
    te = torchvision.datasets.MNIST(root, train=False, download=False)
    return tr.data, tr.targets, te.data, te.targets


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 255] (uint8) or [0, 1] (float) -> the models' input, (n, 1, 28, 28)."""
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / 255.0
    return ((x - MEAN) / STD).reshape(len(x), 1, 28, 28)


def far_ood_sets(test_images: torch.Tensor, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Far-out-of-distribution images in [0, 1], (n, 28, 28) float32, without any download.

    ``inverted`` (1 - a test image), ``rot90`` (a test image turned 90 degrees),
    ``uniform`` and ``gaussian`` noise (N(0.5, 0.25) clipped), and ``digits``
    (scikit-learn's bundled 8x8 ``load_digits``, 1,797 images, bilinearly
    scaled to 28x28).
    """
    from sklearn.datasets import load_digits

    g = np.random.default_rng(seed)
    raw = test_images.to(torch.float32) / 255.0
    idx = torch.from_numpy(g.choice(len(raw), n, replace=False))
    digits = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]
    digits = nn.functional.interpolate(digits, size=(28, 28), mode="bilinear",
                                       align_corners=False)[:, 0].clamp(0, 1)
    return {
        "inverted": 1.0 - raw[idx],
        "rot90": torch.rot90(raw[idx], 1, (1, 2)),
        "uniform": torch.from_numpy(g.random((n, 28, 28)).astype(np.float32)),
        "gaussian": torch.from_numpy(np.clip(g.normal(0.5, 0.25, (n, 28, 28)), 0, 1)
                                     .astype(np.float32)),
        "digits": digits[:n],
    }


class MLP(nn.Module):
    """The prototype's MLP: 784-512-512-512-n, ReLU."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.ReLU(),
        )
        self.head = nn.Linear(512, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (penultimate features)."""
        return self.body(x)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features as (n, 512, 1, 1) maps (for ReAct and ASH)."""
        return self.body(x)[:, :, None, None]

    def maps_to_features(self, m: torch.Tensor) -> torch.Tensor:
        return m.flatten(1)

    def from_maps(self, m: torch.Tensor) -> torch.Tensor:
        return self.head(m.flatten(1))

    #: Layers captured by nnsig (the three ReLUs) and how to pool them.
    capture_layers = ("body.2", "body.4", "body.6")
    pool = None


class SmallCNN(nn.Module):
    """Three conv blocks (3x3 conv, ReLU, 2x2 max-pool; 16, 32, 64 channels), a dense
    ReLU layer of 128 units, the output layer."""

    def __init__(self, n_out: int) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.b1, self.b2, self.b3 = block(1, 16), block(16, 32), block(32, 64)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU())
        self.head = nn.Linear(128, n_out)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's maps (n, 64, 3, 3) (for ReAct and ASH)."""
        return self.b3(self.b2(self.b1(x)))

    def from_maps(self, m: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(m))

    def maps_to_features(self, m: torch.Tensor) -> torch.Tensor:
        return self.fc(m)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The dense hidden layer (penultimate features)."""
        return self.fc(self.feature_maps(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    #: Conv blocks mean-pooled over positions, and the dense layer.
    capture_layers = ("b1", "b2", "b3", "fc")
    pool = {"b1": "mean", "b2": "mean", "b3": "mean"}


MODELS = {"mlp": MLP, "cnn": SmallCNN}


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
          seed: int) -> nn.Module:
    """Adam (lr 1e-3), cross-entropy, shuffled mini-batches; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for lo in range(0, len(X), batch_size):
            idx = perm[lo : lo + batch_size]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def representations(model: nn.Module, X: torch.Tensor,
                    batch_size: int = 2000) -> dict[str, torch.Tensor]:
    """Logits, penultimate features and the maps ReAct/ASH act on, for every row of ``X``."""
    out: dict[str, list[torch.Tensor]] = {"logits": [], "features": [], "maps": []}
    for lo in range(0, len(X), batch_size):
        m = model.feature_maps(X[lo : lo + batch_size])
        out["maps"].append(m)
        f = model.maps_to_features(m)
        out["features"].append(f)
        out["logits"].append(model.head(f))
    return {k: torch.cat(v) for k, v in out.items()}


def ood_scores(model: nn.Module, train_rep: dict[str, torch.Tensor], train_y: torch.Tensor,
               sets: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, np.ndarray]]:
    """pytorch-ood's detectors fitted on the training set and applied to each set.

    Detectors (pytorch-ood's defaults unless said): MaxSoftmax, Energy,
    MaxLogit, Entropy (logits); Mahalanobis and RMD (class means, shared
    covariance of the penultimate features); KNN (k=50, normalised
    penultimate features); ViM (principal subspace of half the feature
    dimension); ReAct (clip at the 90th percentile) and ASH-S (prune 65 %),
    both on the last conv block's maps for the CNN and on the penultimate
    features for the MLP, scored by energy; DICE (p=0.7). They are fitted
    through pytorch-ood's representation interface (``fit_features``...) on
    the model's own representations of every training sample, as its ``fit``
    would compute them. Returns ``{set: {"ood:<Detector>": scores}}``, higher =
    more suspicious (pytorch-ood's convention).
    """
    from pytorch_ood import detector as D

    w, b = model.head.weight.detach(), model.head.bias.detach()
    dim = int(train_rep["features"].shape[1])
    z, y = train_rep["features"], train_y.long()
    feature_dets = {
        "Mahalanobis": D.Mahalanobis(None).fit_features(z, y),
        "RMD": D.RMD(None).fit_features(z, y),
        "KNN": D.KNN(None, k=50).fit_features(z, y),
        "ViM": D.ViM(None, d=dim // 2, w=w, b=b).fit_features(z, y),
        "DICE": D.DICE(None, w=w, b=b, p=0.7).fit_features(z, y),
    }
    react = D.ReAct(backbone=None, head=model.from_maps).fit_feature_maps(train_rep["maps"], y)
    ash = D.ASH(backbone=None, head=model.from_maps, variant="ash-s", percentile=0.65)
    logit_dets = {"MaxSoftmax": D.MaxSoftmax(None), "Energy": D.EnergyBased(None),
                  "MaxLogit": D.MaxLogit(None), "Entropy": D.Entropy(None)}
    out: dict[str, dict[str, np.ndarray]] = {}
    with torch.no_grad():
        for name, rep in sets.items():
            res = {f"ood:{k}": d.predict_logits(rep["logits"]) for k, d in logit_dets.items()}
            res.update({f"ood:{k}": d.predict_features(rep["features"])
                        for k, d in feature_dets.items()})
            res["ood:ReAct"] = react.predict_feature_maps(rep["maps"])
            res["ood:ASH"] = ash.predict_feature_maps(rep["maps"])
            out[name] = {k: np.asarray(v.detach().cpu().numpy(), dtype=np.float64)
                         for k, v in res.items()}
    return out
