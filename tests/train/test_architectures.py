"""Every architecture gives logits and pre-logit features in one pass, for both input geometries."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from divergent.errors import DivergentError  # noqa: E402
from divergent.train.architectures import DEFAULT_DEPTH, build_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("family", sorted(DEFAULT_DEPTH))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_forward_both(family, channels, size):
    torch.manual_seed(0)
    m = build_model(family, in_channels=channels, image_size=size, n_classes=10, width=0.5).eval()
    x = torch.randn(3, channels, size, size)
    with torch.no_grad():
        logits, feats = m.forward_both(x)
        assert logits.shape == (3, 10) and feats.shape == (3, m.embed_dim)
        assert torch.equal(m(x), logits) and torch.equal(m.features(x), feats)
        assert torch.allclose(m.fc(feats), logits)


def test_unknown_family_and_bad_resnet_depth():
    with pytest.raises(DivergentError, match="family"):
        build_model("transformerz", in_channels=1, image_size=28, n_classes=10)
    with pytest.raises(DivergentError, match="6n"):
        build_model("resnet", in_channels=1, image_size=28, n_classes=10, depth=9)
