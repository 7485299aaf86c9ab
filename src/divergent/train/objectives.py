"""Training objectives (supervised CE, SimCLR NT-Xent, distillation, autoencoder, masked-image) and the
training-time linear head for models trained without labels."""
from __future__ import annotations

from ..errors import require
from .augment import SIMCLR_VIEWS, augment, mask_patches


def nt_xent(z1, z2, temperature: float):
    """SimCLR's normalised-temperature cross-entropy over 2N views (Chen et al. 2020)."""
    torch = require("torch", "torch")
    F = torch.nn.functional
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """alpha·T²·KL(teacher_T || student_T) + (1 − alpha)·CE(student, labels) (Hinton et al. 2015)."""
    torch = require("torch", "torch")
    F = torch.nn.functional
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def batch_loss(recipe, model, aux, x01, y, gen, normalize, teacher=None):
    """Loss of one batch. `x01`: float images in [0, 1]; `normalize`: [0,1] -> model input;
    `aux`: ModuleDict with 'projector' / 'decoder' where the objective needs them;
    `teacher`: precomputed teacher logits for the batch, or a callable on model input."""
    torch = require("torch", "torch")
    F = torch.nn.functional
    obj = recipe.objective
    if obj == "supervised":
        logits, _ = model.forward_both(normalize(augment(x01, recipe.augment, gen)))
        return F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
    if obj == "distillation":
        xin = normalize(augment(x01, recipe.augment, gen))
        logits, _ = model.forward_both(xin)
        t = teacher(xin) if callable(teacher) else teacher
        return distillation_loss(logits, t, y, recipe.kd_temperature, recipe.kd_alpha)
    if obj == "contrastive":
        kind = recipe.augment if recipe.augment in SIMCLR_VIEWS else "simclr"
        v = torch.cat([augment(x01, kind, gen), augment(x01, kind, gen)])
        z = aux["projector"](model.features(normalize(v)))
        n = x01.shape[0]
        return nt_xent(z[:n], z[n:], recipe.nt_xent_temperature)
    if obj == "autoencoder":
        xin = normalize(augment(x01, recipe.augment, gen))
        return F.mse_loss(aux["decoder"](model.features(xin)), xin)
    if obj == "masked-image":
        target = normalize(augment(x01, recipe.augment, gen))
        # the whole image is reconstructed from the masked input (loss on every pixel): on
        # Fashion-MNIST a loss on the masked pixels only gave features no better than raw pixels
        # (docs/zoo.md, "Reference floor")
        xm, _ = mask_patches(target, gen, recipe.mask_ratio)
        return F.mse_loss(aux["decoder"](model.features(xm)), target)
    raise ValueError(obj)  # unreachable: Recipe validates objectives


def fit_linear_head(features, labels, n_classes: int, l2: float, max_iter: int = 100):
    """Multinomial logistic regression on frozen features by full-batch L-BFGS (float64, deterministic).

    Minimises mean CE + l2·||W||² on standardised features, then folds the standardisation into
    (W, b) so that logits = features @ W.T + b. Returns (W float32 (K, D), b float32 (K,)).
    """
    torch = require("torch", "torch")
    F = torch.nn.functional
    f = features.detach().to(torch.float64).cpu()
    y = labels.detach().cpu()
    mu = f.mean(0)
    sd = f.std(0).clamp(min=1e-6)
    z = (f - mu) / sd
    W = torch.zeros(n_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ W.t() + b, y) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        W_raw = W / sd
        b_raw = b - W_raw @ mu
    return W_raw.to(torch.float32), b_raw.to(torch.float32)
