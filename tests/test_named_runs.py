"""Nothing lost between named monitors and across resumes: two monitors named "a" and "b" in one Trainer share no tag,
file or directory (issue 20 item 4), and a fit resumed into a new logger version gets its own settings and probes."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor, DriftPolicy, DriftRule, IntegratedGradients
from lightning_xai.visualize.dashboard import ALERT_RUN, SCORE_RUN, THRESHOLD_RUN
from lightning_xai.visualize.log import MediaLogger

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402


def _tags(directory: Path) -> dict[str, list[str]]:
    acc = EventAccumulator(str(directory), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc.Tags()


def _monitor(name: str) -> AttributionMonitor:
    rule = DriftRule(threshold=0.0)  # fires at every armed epoch: alert texts and markers for both
    return AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=1, rules=(rule,)),
        name=name,
    )


def test_two_named_monitors_share_no_tag_file_or_directory(tmp_path: Path) -> None:
    from tensorboard.plugins.custom_scalar import layout_pb2

    tb, csv = TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    monitors = [_monitor("a"), _monitor("b")]
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=3, logger=[tb, csv], callbacks=monitors))
    trainer.fit(TinyCNN(), train, val)

    root = Path(tb.log_dir)
    found: dict[str, set[str]] = {"a": set(), "b": set()}
    for run in ("", SCORE_RUN, THRESHOLD_RUN, ALERT_RUN):
        tags = _tags(root / run)
        for kind in ("images", "scalars", "tensors"):
            for tag in tags.get(kind, []):
                if tag == "custom_scalars__config__" or not tag.startswith("xai"):
                    continue
                owner = tag.split("/")[1]
                assert owner in found, f"{tag!r} (in run {run!r}) belongs to neither monitor"
                found[owner].add(f"{run}:{kind}:{tag.split('/', 2)[2]}")
    # the same things, each under its own name: the sheet, settings, tables, alert texts, summary series
    assert found["a"] == found["b"]
    for item in (
        ":images:sheet",
        ":tensors:settings/text_summary",
        ":tensors:predictions/text_summary",
        ":tensors:alerts/text_summary",
        ":scalars:summary/seconds",
        f"{SCORE_RUN}:scalars:summary/gradcam/rule_rank_vs_reference_median",
        f"{ALERT_RUN}:scalars:summary/gradcam/rule_rank_vs_reference_median",
    ):
        assert item in found["a"], item
    # one layout per event file (TensorBoard reads the last one): both monitors' categories in it
    acc = EventAccumulator(str(root), size_guidance={"tensors": 0})
    acc.Reload()
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])
    titles = [c.title for c in layout.category]
    assert titles == [
        "xai a: summary (x = epoch)",
        "xai a: detail (x = global step)",
        "xai b: summary (x = epoch)",
        "xai b: detail (x = global step)",
    ]
    assert all(tag.startswith("xai/b/") for c in layout.category[2:] for ch in c.chart for tag in ch.multiline.tag)
    # CSV: every file under xai/<name>/, the settings too
    files = sorted(p.relative_to(Path(csv.log_dir)).as_posix() for p in Path(csv.log_dir).rglob("*") if p.is_file())
    xai_files = [f for f in files if f.startswith("xai")]
    assert xai_files and all(f.startswith(("xai/a/", "xai/b/")) for f in xai_files)
    a = {f.removeprefix("xai/a/") for f in xai_files if f.startswith("xai/a/")}
    assert a == {f.removeprefix("xai/b/") for f in xai_files if f.startswith("xai/b/")}
    assert "settings.json" in a and any(f.startswith("sheet/") for f in a)


def test_a_resumed_fit_writes_settings_and_probes_into_its_new_logger_version(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    kwargs = trainer_kwargs(tmp_path, max_epochs=2, enable_checkpointing=True)
    L.Trainer(**{**kwargs, "logger": first, "callbacks": [_monitor("a"), checkpoints]}).fit(TinyCNN(), train, val)
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # primitives only
    stored = next(v for k, v in state["callbacks"].items() if "AttributionMonitor" in k)["probes_logged"]
    assert stored == [f"TensorBoardLogger:{first.log_dir}"]

    second = TensorBoardLogger(str(tmp_path), name="tb", version=1)
    resumed = _monitor("a")
    kwargs = {**kwargs, "max_epochs": 3, "logger": second, "callbacks": [resumed, ModelCheckpoint(save_last=True)]}
    L.Trainer(**kwargs).fit(TinyCNN(), train, val, ckpt_path=str(last))
    old, new = _tags(Path(first.log_dir)), _tags(Path(second.log_dir))
    assert "xai/a/settings/text_summary" in old["tensors"] and "xai/a/settings/text_summary" in new["tensors"]
    assert ("xai/a/probes" in old["images"]) == ("xai/a/probes" in new["images"])  # the grid, where grids are on
    assert "xai/a/sheet" in new["images"]
    assert "custom_scalars__config__" in new["tensors"]
    assert f"TensorBoardLogger:{second.log_dir}" in resumed.media.probes_logged


def test_probes_logged_loads_a_list_of_versions_and_an_old_bool() -> None:
    media = MediaLogger("jet", None, False, background=False)
    media.probes_logged = ["TensorBoardLogger:logs/tb/version_0"]
    assert media.logged_to == {"TensorBoardLogger:logs/tb/version_0"}
    media.probes_logged = True  # an older checkpoint: which version holds them is unknown, so they are logged again
    assert media.logged_to == set() and media.probes_logged == []
