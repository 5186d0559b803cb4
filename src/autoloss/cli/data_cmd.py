"""`autoloss data list`: the datasets usable by name (`--data NAME`), with their size, classes, the three
splits the loader makes of them, licence and source."""

from __future__ import annotations

import json

import click


@click.group()
def data() -> None:
    """The built-in datasets (usable as --data NAME)."""


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per dataset instead of a table.")
def list_(as_json: bool) -> None:
    """Name, images, boxes, classes, train/search-val/test split, licence and source of every built-in set."""
    from rich.console import Console
    from rich.table import Table

    from autoloss.data_specs import BUILTIN, GENERATED
    from autoloss.detection.coco_cache import load_coco
    from autoloss.detection.coco_json import three_way_split
    from autoloss.detection.data import DataReport
    from autoloss.detection.datasets import json_path

    rows = []
    for name, spec in BUILTIN.items():
        source = load_coco(json_path(name), DataReport())
        plan = three_way_split(source, seed=0)
        rows.append(
            {
                "name": name,
                "images": len(source),
                "boxes": int((~source.iscrowd).sum()),
                "classes": list(source.class_names),
                "splits": {"train": len(plan.train), "val": len(plan.val), "test": len(plan.test)},
                "split_method": plan.method,
                "licence": spec.licence,
                "source": spec.source,
                "content": spec.content,
            }
        )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table(title="Built-in real datasets (images at most 512 px; --data NAME)")
    for col in ("name", "images", "boxes", "classes", "train / search-val / test", "licence", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        s = r["splits"]
        table.add_row(
            r["name"],
            str(r["images"]),
            str(r["boxes"]),
            ", ".join(r["classes"]),
            f"{s['train']} / {s['val']} / {s['test']}",
            r["licence"],
            r["source"],
        )
    console = Console()
    console.print(table, markup=False, highlight=False)
    console.print(
        f"Generated (tests and smoke runs, no real photos): {', '.join(GENERATED)}. Splits with data seed 0; "
        "a set whose upstream search-val or test split has under 40 images is re-split, class-stratified.",
        markup=False,
    )


COMMANDS = [data]
