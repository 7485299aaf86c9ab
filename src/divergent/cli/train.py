"""CLI: `divergent zoo list [ZOO]` and `divergent train ZOO --out DIR` (in-project zoo recipes)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

zoo_app = typer.Typer(help="In-project zoo recipes (docs/zoo.md).", no_args_is_help=True)


@zoo_app.command("list")
def zoo_list(zoo: str = typer.Argument("fashion-mnist", help="fashion-mnist, fashion-mnist-quick, cifar10 or a TOML file")):
    """List a zoo's recipes with their card fields and derived category vs the base."""
    import pandas as pd

    from ..cards import category
    from ..train import base_recipe, card_from_recipe
    from ..train import zoo as zoo_fn

    recipes = zoo_fn(zoo)
    base = card_from_recipe(base_recipe(zoo)) if not zoo.endswith(".toml") else card_from_recipe(recipes[0])
    rows = []
    for r in recipes:
        c = card_from_recipe(r)
        rows.append({"name": c.name, "family": c.family, "objective": c.objective, "subset": c.subset,
                     "seed": c.seed, "category": category(base, c)})
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        typer.echo(pd.DataFrame(rows).to_string(index=False))


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")

    @app.command("train")
    def train_cmd(zoo: str = typer.Argument("fashion-mnist", help="zoo name or TOML file"),
                  out: Path = typer.Option(..., "--out", help="directory for checkpoints and trained models"),
                  only: Optional[str] = typer.Option(None, "--only", help="comma list of recipe names"),
                  device: str = typer.Option("auto", "--device", help="auto (CUDA when present) or cpu")):
        """Train (or resume) a zoo's recipes; deterministic given each recipe's seed."""
        from ..errors import unknown
        from ..train import train_recipe
        from ..train import zoo as zoo_fn

        recipes = zoo_fn(zoo)
        if only:
            names = {r.name: r for r in recipes}
            wanted = [s.strip() for s in only.split(",") if s.strip()]
            for w in wanted:
                if w not in names:
                    raise unknown("recipe", w, names)
            recipes = [names[w] for w in wanted]
        for r in recipes:
            t = train_recipe(r, out, device=device, progress=True)
            typer.echo(f"{t.name}: {t.train_wall_s:.1f} s -> {t.checkpoint}")
