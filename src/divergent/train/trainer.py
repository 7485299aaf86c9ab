"""The zoo's trainer: deterministic given the seed (CPU), resumable per epoch, atomic checkpoints.

`train_recipe(recipe, out_dir)` trains (or resumes, or simply loads) one recipe under
`out_dir/<name with '/' -> '__'>/`, writing `checkpoint.pt` atomically after every epoch and
`model.pt` + `card.json` when done. `predict(trained, images_uint8)` gives float32 logits and
pre-logit features. Randomness: the model is initialised from `torch.manual_seed(seed)`; epoch e
draws its shuffling and augmentation from a CPU generator seeded with (seed, e) and reseeds
the global RNG (dropout) the same way, so a resumed run follows exactly the same path.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_path, atomic_write_text
from ..cards import ModelCard
from ..conventions import TRAIN
from ..errors import DivergentError, require
from .architectures import build_decoder, build_model, build_projector
from .data import DATASETS, load_split, subset_indices
from .objectives import batch_loss, fit_linear_head
from .recipes import PROBED, Recipe, card_from_recipe, recipe_by_name

FORMAT = 1


@dataclass
class TrainedModel:
    """A trained zoo model on disk: its recipe, card, checkpoint and timings."""

    name: str
    recipe: Recipe
    card: ModelCard
    checkpoint: Path
    train_wall_s: float
    head_fit_s: float = 0.0
    epoch_wall_s: list[float] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    device: str = "cpu"
    resumed: bool = False
    _module: Any = field(default=None, repr=False, compare=False)

    @property
    def head(self) -> str:
        return self.recipe.head


def safe_dirname(name: str) -> str:
    return name.replace("/", "__").replace(":", "_")


def resolve_device(device: str = "auto") -> str:
    torch = require("torch", "torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DivergentError(f"device {device!r} requested but CUDA is not available", "use device='cpu'")
    return device


def _seed_for(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 7919]).generate_state(1, np.uint64)[0] % (2**63))


def _atomic_save(obj, path: Path) -> None:
    torch = require("torch", "torch")
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def _deterministic(device: str):
    torch = require("torch", "torch")
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


def _modules(recipe: Recipe, device: str):
    """(model, aux ModuleDict), initialised from torch.manual_seed(recipe.seed)."""
    torch = require("torch", "torch")
    meta = DATASETS[recipe.dataset]
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.family, in_channels=meta["channels"], image_size=meta["size"],
                        n_classes=meta["n_classes"], width=recipe.width, depth=recipe.depth,
                        dropout=recipe.dropout)
    aux = torch.nn.ModuleDict()
    if recipe.objective == "contrastive":
        aux["projector"] = build_projector(embed_dim=model.embed_dim)
    if recipe.objective in ("autoencoder", "masked-image"):
        aux["decoder"] = build_decoder(embed_dim=model.embed_dim, out_channels=meta["channels"],
                                       image_size=meta["size"])
    return model.to(device), aux.to(device)


def _normalizer(dataset: str, device: str):
    torch = require("torch", "torch")
    meta = DATASETS[dataset]
    mean = torch.tensor(meta["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda x: (x - mean) / std


def _to_nchw_uint8(images: np.ndarray, dataset: str):
    """uint8 (N,H,W) or (N,H,W,C) -> torch uint8 (N,C,H,W), checking the geometry."""
    torch = require("torch", "torch")
    meta = DATASETS[dataset]
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise DivergentError(f"images must be uint8, got {a.dtype}", "pass raw 0..255 pixels")
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[1:3] != (meta["size"], meta["size"]):
        raise DivergentError(f"images of shape {np.asarray(images).shape} do not fit {dataset} "
                             f"({meta['size']}x{meta['size']}x{meta['channels']})",
                             "resize to the training resolution first")
    if a.shape[3] != meta["channels"]:
        if meta["channels"] == 3 and a.shape[3] == 1:
            a = np.repeat(a, 3, axis=3)
        elif meta["channels"] == 1 and a.shape[3] == 3:
            a = np.round(a @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)[..., None]
        else:
            raise DivergentError(f"images have {a.shape[3]} channels; {dataset} models take {meta['channels']}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _lr_at(recipe: Recipe, step: int, total: int) -> float:
    warm = max(1, int(round(recipe.warmup * total)))
    if step < warm:
        return recipe.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * t))


def _optimizer(recipe: Recipe, params):
    torch = require("torch", "torch")
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def training_indices(recipe: Recipe) -> np.ndarray:
    """Which examples of the train split a recipe trains on (indices into the split)."""
    data = load_split(recipe.dataset, TRAIN)
    return subset_indices(len(data.labels), recipe.subset, recipe.limit)


def train_recipe(recipe: Recipe, out_dir, device: str = "auto", progress: bool = True,
                 until_epoch: int | None = None, threads: int | None = None) -> TrainedModel | None:
    """Train `recipe` (resuming from its checkpoint, or loading it if already finished).

    `until_epoch`: stop after this many epochs with the checkpoint saved and return None
    (budgeted / interrupted runs; call again to continue). `threads`: torch CPU threads while
    training (restored afterwards); on a crowded machine 1 is often fastest.
    """
    torch = require("torch", "torch")
    if threads is not None:
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            return train_recipe(recipe, out_dir, device=device, progress=progress, until_epoch=until_epoch)
        finally:
            torch.set_num_threads(prev_threads)
    device = resolve_device(device)
    model_dir = Path(out_dir) / safe_dirname(recipe.name)
    final, ckpt_path = model_dir / "model.pt", model_dir / "checkpoint.pt"
    if final.exists():
        trained = load_trained(model_dir)
        if trained.recipe != recipe:
            raise DivergentError(f"{final} was trained from a different recipe than {recipe.name!r}",
                                 "delete that directory or train into another out_dir")
        return trained
    model_dir.mkdir(parents=True, exist_ok=True)

    data = load_split(recipe.dataset, TRAIN)
    idx = training_indices(recipe)
    X = _to_nchw_uint8(data.images[idx], recipe.dataset)
    Y = torch.from_numpy(data.labels[idx].astype(np.int64))
    n = len(Y)
    bs = min(recipe.batch_size, n)
    steps_per_epoch = n // bs
    total = steps_per_epoch * recipe.epochs
    normalize = _normalizer(recipe.dataset, device)

    teacher_logits = teacher_fn = None
    if recipe.objective == "distillation":
        teacher_dir = Path(out_dir) / safe_dirname(recipe.teacher)
        teacher = (load_trained(teacher_dir) if (teacher_dir / "model.pt").exists() else
                   train_recipe(recipe_by_name(recipe.teacher), out_dir, device=device, progress=progress))
        if recipe.augment == "none":
            teacher_logits = torch.from_numpy(predict(teacher, data.images[idx], device=device)[0])
        else:
            tm = _load_module(teacher, device)
            teacher_fn = lambda xin: tm(xin).detach()  # noqa: E731

    with _deterministic(device):
        model, aux = _modules(recipe, device)
        params = [p for p in list(model.parameters()) + list(aux.parameters())]
        opt = _optimizer(recipe, params)
        start, history, epoch_wall, resumed = 0, [], [], False
        if ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location=device, weights_only=True)
            if ck.get("recipe") != recipe.to_dict():
                raise DivergentError(f"checkpoint {ckpt_path} belongs to a different recipe",
                                     "delete it to start over")
            model.load_state_dict(ck["model"])
            aux.load_state_dict(ck["aux"])
            opt.load_state_dict(ck["optimizer"])
            start, history, epoch_wall, resumed = ck["epoch"], list(ck["history"]), list(ck["epoch_wall_s"]), True
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start * steps_per_epoch, desc=recipe.name, unit="step",
                   disable=None if progress else True, leave=False)
        for epoch in range(start, recipe.epochs):
            t0 = time.perf_counter()
            s = _seed_for(recipe.seed, epoch)
            gen = torch.Generator().manual_seed(s)
            torch.manual_seed(s + 1)
            perm = torch.randperm(n, generator=gen)
            model.train()
            aux.train()
            running = 0.0
            for k in range(steps_per_epoch):
                b = perm[k * bs:(k + 1) * bs]
                x01 = X[b].to(device=device, dtype=torch.float32) / 255.0
                y = Y[b].to(device)
                t = teacher_logits[b].to(device) if teacher_logits is not None else teacher_fn
                for g in opt.param_groups:
                    g["lr"] = _lr_at(recipe, epoch * steps_per_epoch + k, total)
                loss = batch_loss(recipe, model, aux, x01, y, gen, normalize, teacher=t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += float(loss.detach())
                bar.update(1)
                if progress and k % 20 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss):.4f}")
            history.append(running / max(1, steps_per_epoch))
            epoch_wall.append(time.perf_counter() - t0)
            _atomic_save({"format": FORMAT, "recipe": recipe.to_dict(), "epoch": epoch + 1,
                          "model": model.state_dict(), "aux": aux.state_dict(), "optimizer": opt.state_dict(),
                          "history": history, "epoch_wall_s": epoch_wall}, ckpt_path)
            if until_epoch is not None and epoch + 1 >= until_epoch and epoch + 1 < recipe.epochs:
                bar.close()
                return None
        bar.close()

        model.eval()
        head_fit_s = 0.0
        if recipe.objective in PROBED:
            t0 = time.perf_counter()
            feats = _batched(model, X, normalize, device, want="features")
            W, bias = fit_linear_head(feats, Y, n_classes=DATASETS[recipe.dataset]["n_classes"],
                                      l2=recipe.probe_l2)
            with torch.no_grad():
                model.fc.weight.copy_(W.to(device))
                model.fc.bias.copy_(bias.to(device))
            head_fit_s = time.perf_counter() - t0

    train_wall = float(sum(epoch_wall)) + head_fit_s
    card = card_from_recipe(recipe, train_wall_s=round(train_wall, 3), device=device,
                            train_examples=int(n), epochs=recipe.epochs)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_save({"format": FORMAT, "recipe": recipe.to_dict(), "model": state, "history": history,
                  "epoch_wall_s": epoch_wall, "head_fit_s": head_fit_s, "device": device,
                  "resumed": resumed}, final)
    atomic_write_text(model_dir / "card.json", json.dumps(card.to_dict(), indent=2, sort_keys=True))
    if ckpt_path.exists():
        ckpt_path.unlink()
    trained = load_trained(model_dir)
    trained._module = model.to("cpu") if device != "cpu" else model
    return trained


def load_trained(model_dir) -> TrainedModel:
    """Load a finished model directory written by `train_recipe`."""
    torch = require("torch", "torch")
    model_dir = Path(model_dir)
    final = model_dir / "model.pt"
    if not final.exists():
        raise DivergentError(f"no finished model in {model_dir}", "run train_recipe (it resumes)")
    ck = torch.load(final, map_location="cpu", weights_only=True)
    recipe = Recipe.from_dict(ck["recipe"])
    card = ModelCard.from_dict(json.loads((model_dir / "card.json").read_text()))
    return TrainedModel(name=recipe.name, recipe=recipe, card=card, checkpoint=final,
                        train_wall_s=float(card.provenance.get("train_wall_s", sum(ck["epoch_wall_s"]))),
                        head_fit_s=float(ck["head_fit_s"]), epoch_wall_s=list(ck["epoch_wall_s"]),
                        history=list(ck["history"]), device=ck["device"], resumed=bool(ck["resumed"]))


def _load_module(trained: TrainedModel, device: str = "cpu"):
    torch = require("torch", "torch")
    if trained._module is None:
        model, _ = _modules(trained.recipe, "cpu")
        ck = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        model.eval()
        trained._module = model
    return trained._module.to(device).eval()


def _batched(model, X, normalize, device, want="both", batch_size: int = 512):
    torch = require("torch", "torch")
    logits, feats = [], []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            x = normalize(X[i:i + batch_size].to(device=device, dtype=torch.float32) / 255.0)
            lg, f = model.forward_both(x)
            logits.append(lg.float().cpu())
            feats.append(f.float().cpu())
    if want == "features":
        return torch.cat(feats)
    return torch.cat(logits), torch.cat(feats)


def predict(trained: TrainedModel, images_uint8: np.ndarray, device: str = "cpu",
            batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 (N, K), features float32 (N, D)) of uint8 images (N,H,W[,C]); deterministic."""
    torch = require("torch", "torch")
    device = resolve_device(device)
    model = _load_module(trained, device)
    X = _to_nchw_uint8(images_uint8, trained.recipe.dataset)
    with _deterministic(device):
        logits, feats = _batched(model, X, _normalizer(trained.recipe.dataset, device), device,
                                 batch_size=batch_size)
    if device != "cpu":
        trained._module = model.to("cpu")
    return logits.numpy().astype(np.float32), feats.numpy().astype(np.float32)


def train_zoo(name: str, out_dir, device: str = "auto", progress: bool = True,
              threads: int | None = None) -> list[TrainedModel]:
    """Train (or resume, or load) every recipe of a zoo in order; returns the trained models."""
    from .recipes import zoo

    return [train_recipe(r, out_dir, device=device, progress=progress, threads=threads) for r in zoo(name)]
