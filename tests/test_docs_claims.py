"""The prose and tables of the docs against a real run: every tag a tiny fit logs is in the tag tables under the
name they give it, and the tags the tables say come "every evaluated epoch" do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy, DriftRule

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradcam", "integrated_gradients")
#: what each placeholder of the tag tables stands for
PLACEHOLDERS = {
    "method": "|".join(METHODS),
    "metric": "rank|topk",
    "reference": "previous|reference",
    "statistic": "median|share",
    "measure": "deletion|insertion|sparseness|entropy",
}
#: logged by Lightning or TensorBoard, not by the monitor
NOT_THE_MONITORS = {"val_loss", "epoch", "hp_metric", "custom_scalars__config__"}


def _pattern(tag: str) -> re.Pattern[str]:
    """A documented tag as a regex: ``<placeholder>`` as its choices, ``...`` as any part of a tag."""
    out, pos = "", 0
    for match in re.finditer(r"<(\w+)>|\.\.\.", tag):
        out += re.escape(tag[pos : match.start()])
        if match.group(0) == "...":
            out += ".+"
        elif match.group(1) not in PLACEHOLDERS:
            raise AssertionError(f"the tag {tag!r} has a placeholder no table explains: {match.group(0)}")
        else:
            out += f"(?:{PLACEHOLDERS[match.group(1)]})"
        pos = match.end()
    return re.compile(out + re.escape(tag[pos:]))


def _table(path: str, *sections: tuple[str, str | None]) -> list[tuple[list[str], str]]:
    """The rows of the tag tables in ``sections`` (between two headings, the second None at the end of the page):
    the tags (``xai/...`` or ``.../...`` in backticks, in any cell) and the "when" cell."""
    text = (ROOT / path).read_text(encoding="utf-8")
    lines = []
    for start, end in sections:
        lines += text[text.index(start) : text.index(end) if end else None].splitlines()
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        tags = re.findall(r"`((?:xai/|\.\.\./)[^`]*)`", line)
        rows.append((tags, cells[-1]))
    assert len(rows) >= 15, f"{path}: the table was not found"
    return rows


TABLES: dict[str, tuple[Any, ...]] = {
    "README": ("README.md", ("### TensorBoard tags", "## Methods")),
    "seeing": ("docs/seeing.md", ("## The TensorBoard dashboard", "### The Scalars"), ("## Tags", None)),
}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every tag of a 4-epoch fit with every optional image and scalar switched on, and a rule that fires."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp = tmp_path_factory.mktemp("claims")
    masks = torch.zeros(8, 12, 12, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    monitor = AttributionMonitor(
        num_probes=8,
        drift=DriftPolicy(warmup_epochs=1, rules=(DriftRule(metric="topk", reference="previous", threshold=0.01),)),
        display=Display(log_grids=True, log_heatmaps=True, quality=("entropy",), probe_masks=masks),
        budget=Budget(max_seconds_per_epoch=100.0),
    )
    torch.manual_seed(0)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp), name="tb")
    trainer = L.Trainer(**trainer_kwargs(tmp, max_epochs=4, logger=logger, callbacks=[monitor]))
    with pytest.warns(UserWarning, match="Attribution drift"):
        trainer.fit(TinyCNN(), train, val)
    assert monitor.alerts, "the rule should fire, so that its summary series and alert texts are logged"
    tags: set[str] = set()
    for events in Path(logger.log_dir).rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        accumulator.Reload()
        found: Any = accumulator.Tags()
        for kind in ("scalars", "images", "tensors"):
            tags.update(tag.removesuffix("/text_summary") for tag in found[kind])
    return tags - NOT_THE_MONITORS


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_logged_tag_is_in_the_tag_table_under_its_name(table: str, logged: set[str]) -> None:
    patterns = [_pattern(tag) for tags, _ in _table(*TABLES[table]) for tag in tags]
    assert {"xai/sheet", "xai/summary/gradcam/rule_topk_vs_previous_median"} <= logged  # the fit logged
    assert sorted(t for t in logged if not any(p.fullmatch(t) for p in patterns)) == []


def test_what_the_readme_says_comes_every_evaluated_epoch_does(logged: set[str]) -> None:
    """With ``Display(log_grids=True, log_heatmaps=True)``: every row whose "when" is "every evaluated epoch"."""
    rows = _table(*TABLES["README"])
    every = [tag for tags, when in rows if when.startswith("every evaluated epoch") for tag in tags]
    concrete = {tag.replace("<method>", method) for tag in every for method in METHODS}
    assert len(concrete) >= 10 and not any("<" in tag or "..." in tag for tag in concrete), concrete
    assert sorted(concrete - logged) == []


@pytest.mark.parametrize(
    ("cells", "cue", "box"),
    [(32, (slice(1, 3), slice(1, 3)), (1, 1, 3, 3)), (4, (slice(0, 1), slice(0, 1)), (0, 0, 8, 9))],
)
def test_a_cue_smaller_than_a_detector_cell_gets_a_box_as_fine_as_the_maps(
    cells: int, cue: tuple[slice, slice], box: tuple[int, ...]
) -> None:
    """docs/alerts.md, blind spots: a 2×2 cue in a 32×32 image gets a 2×2 box on maps at input resolution (IG's), but
    about one layer cell (8×8 px) on a 4×4 Grad-CAM map (it said: a detector cell's 4×4 box in every case)."""
    from lightning_xai.drift.evidence import gain_regions, input_maps
    from lightning_xai.functional.shift import relevance_distribution

    before = torch.zeros(8, cells, cells)
    before[:, cells // 4 : 3 * cells // 4, cells // 4 : 3 * cells // 4] = 1.0  # the probes look at the centre
    after = before.clone()
    after[(slice(None), *cue)] += 40.0 / cells  # then at the top-left corner: the 2×2 cue, or the layer cell holding it
    current, origin = relevance_distribution(after), relevance_distribution(before)
    fine = (input_maps(after, (32, 32)), input_maps(before, (32, 32)))
    (region,) = gain_regions(current, origin, origin, tuple(range(8)), None, fine, (32, 32))
    assert region.box == box
