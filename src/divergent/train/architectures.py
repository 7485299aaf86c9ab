"""Small CPU-friendly image classifiers (cnn, mlp, resnet, vit, mixer) with a pre-logit embedding.

Every model maps a normalised float batch (N, C, H, W) to `(logits, features)` in one pass
(`forward_both`); `forward(x)` gives logits and `features(x)` the pre-logit embedding.
The classifier is always a final `fc = nn.Linear(embed_dim, n_classes)`, so models trained
without labels (contrastive, autoencoder) get their linear head written into `fc`.
"""
from __future__ import annotations

from ..errors import require, unknown

#: default depth per family (what `Recipe.depth = None` means)
DEFAULT_DEPTH = {"cnn": 2, "mlp": 2, "resnet": 8, "vit": 4, "mixer": 4}


def build_model(family: str, *, in_channels: int, image_size: int, n_classes: int,
                width: float = 1.0, depth: int | None = None, dropout: float = 0.0):
    """Build an untrained model of `family` (uses the global torch RNG for initialisation)."""
    builders = {"cnn": _cnn, "mlp": _mlp, "resnet": _resnet, "vit": _vit, "mixer": _mixer}
    if family not in builders:
        raise unknown("architecture family", family, builders)
    depth = DEFAULT_DEPTH[family] if depth is None else int(depth)
    return builders[family](in_channels=in_channels, image_size=image_size, n_classes=n_classes,
                            width=float(width), depth=depth, dropout=float(dropout))


def _base_class():
    nn = require("torch.nn", "torch")

    class Classifier(nn.Module):
        """`embed` (subclass) -> dropout -> fc."""

        def __init__(self, embed_dim: int, n_classes: int, dropout: float):
            super().__init__()
            self.embed_dim = embed_dim
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.fc = nn.Linear(embed_dim, n_classes)

        def forward_both(self, x):
            f = self.embed(x)
            return self.fc(self.drop(f)), f

        def forward(self, x):
            return self.forward_both(x)[0]

        def features(self, x):
            return self.embed(x)

    return Classifier


def _cnn(*, in_channels, image_size, n_classes, width, depth, dropout):
    """`depth` stages of conv3x3-BN-ReLU-maxpool (16·width·2^i channels), then a 128·width hidden layer."""
    nn = require("torch.nn", "torch")
    Classifier = _base_class()

    class CNN(Classifier):
        def __init__(self):
            hidden = max(8, int(round(128 * width)))
            super().__init__(hidden, n_classes, dropout)
            layers, c, s = [], in_channels, image_size
            for i in range(depth):
                co = max(4, int(round(16 * width * 2 ** i)))
                layers += [nn.Conv2d(c, co, 3, padding=1, bias=False), nn.BatchNorm2d(co),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                c, s = co, s // 2
            self.trunk = nn.Sequential(*layers, nn.Flatten())
            self.hidden = nn.Sequential(nn.Linear(c * s * s, hidden), nn.ReLU(inplace=True))

        def embed(self, x):
            return self.hidden(self.trunk(x))

    return CNN()


def _mlp(*, in_channels, image_size, n_classes, width, depth, dropout):
    """`depth` hidden layers of 512·width units (halving), ReLU."""
    nn = require("torch.nn", "torch")
    Classifier = _base_class()

    class MLP(Classifier):
        def __init__(self):
            sizes = [max(8, int(round(512 * width / 2 ** i))) for i in range(depth)]
            super().__init__(sizes[-1], n_classes, dropout)
            layers, d = [nn.Flatten()], in_channels * image_size * image_size
            for h in sizes:
                layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
                d = h
            self.body = nn.Sequential(*layers)

        def embed(self, x):
            return self.body(x)

    return MLP()


def _resnet(*, in_channels, image_size, n_classes, width, depth, dropout):
    """CIFAR-style ResNet (He et al. 2016): depth = 6n+2, three stages of n basic blocks (16/32/64·width)."""
    nn = require("torch.nn", "torch")
    Classifier = _base_class()
    if depth < 8 or (depth - 2) % 6:
        from ..errors import DivergentError

        raise DivergentError(f"resnet depth must be 6n+2 (8, 14, 20, ...), got {depth}",
                             "use depth 8, 14 or 20")
    n = (depth - 2) // 6

    class Block(nn.Module):
        def __init__(self, ci, co, stride):
            super().__init__()
            self.c1 = nn.Conv2d(ci, co, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(co)
            self.c2 = nn.Conv2d(co, co, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(co)
            self.short = (nn.Identity() if stride == 1 and ci == co else
                          nn.Sequential(nn.Conv2d(ci, co, 1, stride, bias=False), nn.BatchNorm2d(co)))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.act(self.b1(self.c1(x)))
            return self.act(self.b2(self.c2(y)) + self.short(x))

    class ResNet(Classifier):
        def __init__(self):
            chans = [max(4, int(round(c * width))) for c in (16, 32, 64)]
            super().__init__(chans[-1], n_classes, dropout)
            layers = [nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]),
                      nn.ReLU(inplace=True)]
            ci = chans[0]
            for si, co in enumerate(chans):
                for bi in range(n):
                    layers.append(Block(ci, co, 2 if (si > 0 and bi == 0) else 1))
                    ci = co
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def embed(self, x):
            return self.body(x)

    return ResNet()


def _patchify(nn, in_channels, dim, patch):
    return nn.Conv2d(in_channels, dim, patch, stride=patch)


def _vit(*, in_channels, image_size, n_classes, width, depth, dropout):
    """Small ViT: 4x4 patches, dim 64·width, 4 heads, pre-norm blocks, mean-pooled tokens."""
    torch = require("torch", "torch")
    nn = torch.nn
    Classifier = _base_class()
    patch = 4
    tokens = (image_size // patch) ** 2

    class ViT(Classifier):
        def __init__(self):
            dim = max(16, int(round(64 * width)))
            super().__init__(dim, n_classes, dropout)
            self.patch = _patchify(nn, in_channels, dim, patch)
            self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)

        def embed(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
            return self.norm(self.blocks(t)).mean(dim=1)

    return ViT()


def _mixer(*, in_channels, image_size, n_classes, width, depth, dropout):
    """Small MLP-Mixer (Tolstikhin et al. 2021): 4x4 patches, dim 64·width, token/channel MLPs."""
    torch = require("torch", "torch")
    nn = torch.nn
    Classifier = _base_class()
    patch = 4
    tokens = (image_size // patch) ** 2

    class MixerBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.n1 = nn.LayerNorm(dim)
            self.tok = nn.Sequential(nn.Linear(tokens, tokens), nn.GELU(), nn.Linear(tokens, tokens))
            self.n2 = nn.LayerNorm(dim)
            self.ch = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
            return x + self.ch(self.n2(x))

    class Mixer(Classifier):
        def __init__(self):
            dim = max(16, int(round(64 * width)))
            super().__init__(dim, n_classes, dropout)
            self.patch = _patchify(nn, in_channels, dim, patch)
            self.blocks = nn.Sequential(*[MixerBlock(dim) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)

        def embed(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            return self.norm(self.blocks(t)).mean(dim=1)

    return Mixer()


def build_decoder(*, embed_dim: int, out_channels: int, image_size: int):
    """Decoder for autoencoder / masked-image objectives: embedding -> image (N, C, H, W)."""
    nn = require("torch.nn", "torch")
    s0 = image_size // 4

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(embed_dim, 16 * s0 * s0), nn.ReLU(inplace=True))
            self.up = nn.Sequential(
                nn.ConvTranspose2d(16, 16, 4, 2, 1), nn.ReLU(inplace=True),
                nn.ConvTranspose2d(16, out_channels, 4, 2, 1),
            )

        def forward(self, f):
            return self.up(self.fc(f).view(f.shape[0], 16, s0, s0))

    return Decoder()


def build_projector(*, embed_dim: int, out_dim: int = 64):
    """SimCLR projection head g(h) = W2 relu(W1 h)."""
    nn = require("torch.nn", "torch")
    return nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, out_dim))
