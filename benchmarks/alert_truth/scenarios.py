"""The scenarios of the suite, and one monitored training run that records everything a detector needs.

Shortcut scenarios (``kind="shortcut"``): the cue is in every image from the start, random in training until
``onset_epoch``, from which it spells the label in the training data while ``content_noise`` of the digits get
another class's digit (so that the cue becomes the better feature). Validation images carry their own label's cue.
``class_subset``: the cue (the background's colour) spells the label only for classes ``cue_classes`` (0-4), and
the behavioural check swaps in the cue of another class of that subset; ``gradual``: the share of training images
whose cue spells the label grows over the epochs from the onset (``ramp``); ``object_colour``: the digit's colour.

Benign scenarios (``kind="benign"``): the cue stays random in training for the whole run; something ordinary
happens instead (a long run, a learning-rate drop, warm restarts, augmentation switched on, a frozen backbone
unfrozen), or ``content_noise``: the shortcut runs' data change at the same epoch (half of the digits replaced by
another class's digit) while the cue stays random, the control that tells a shortcut from any data shift. Benign
data shifts at epoch 5: ``background_shift`` (80 % of the background colours from 3 of the 10, independent of the
label), ``random_tag`` (a corner patch with a random code appears on every training image), ``brightness_contrast``
(jitter switched on). A benign scenario without a cue of its own rotates it with the seed (``CUES[seed % 3]``) so
every gray cue kind appears among the controls.

The monitor runs at its defaults: ``AttributionMonitor(probes=(images, labels))`` with the 10 probes = the first
validation image of each class (fixed images, carrying their own label's cue), plus ``denormalize=(mean, std)``
for the normalised resnet18 view. Nothing else (no rules, no thresholds).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader

from benchmarks.alert_truth.data import CUES, DigitData, TrainSet, ValSet, shifted_codes
from benchmarks.alert_truth.models import FAMILIES, Classifier, Optim, backbone_parameters, build, view_for
from lightning_xai import AttributionMonitor
from lightning_xai._trainer import SetupWatch
from lightning_xai.explain.guard import training_state_guard

FORMAT_VERSION = 2  # 2: the colour parts are per degree of freedom (brightness 1, colour C - 1), as the monitor
#: ``gradual``: the share of training images whose cue spells the label, per epoch from the onset
RAMP = (0.25, 0.5, 0.75, 1.0)

#: name -> settings; ``change_epoch`` is the data onset (shortcut) or the epoch of the benign change.
SCENARIOS: dict[str, dict[str, Any]] = {
    "corner_patch": {"kind": "shortcut", "cue": "corner_patch", "epochs": 10, "change_epoch": 5},
    "texture": {"kind": "shortcut", "cue": "texture", "epochs": 10, "change_epoch": 5},
    "position_mark": {"kind": "shortcut", "cue": "position_mark", "epochs": 10, "change_epoch": 5},
    "class_subset": {
        "kind": "shortcut",
        "cue": "background_colour",
        "epochs": 10,
        "change_epoch": 5,
        "cue_classes": (0, 1, 2, 3, 4),
    },
    "gradual": {"kind": "shortcut", "cue": "corner_patch", "epochs": 10, "change_epoch": 5, "ramp": RAMP},
    "object_colour": {"kind": "shortcut", "cue": "object_colour", "epochs": 10, "change_epoch": 5},
    "long": {"kind": "benign", "epochs": 16, "change_epoch": None},
    "lr_drop": {"kind": "benign", "epochs": 10, "change_epoch": 5},
    "warm_restarts": {"kind": "benign", "epochs": 10, "change_epoch": None, "restart_epochs": 3},
    "augment_on": {"kind": "benign", "epochs": 10, "change_epoch": 5},
    "content_noise": {"kind": "benign", "epochs": 10, "change_epoch": 5},
    "unfreeze": {"kind": "benign", "epochs": 10, "change_epoch": 5},
    "background_shift": {"kind": "benign", "cue": "background_colour", "epochs": 10, "change_epoch": 5},
    "random_tag": {"kind": "benign", "cue": "corner_patch", "epochs": 10, "change_epoch": 5},
    "brightness_contrast": {"kind": "benign", "epochs": 10, "change_epoch": 5},
}
SHORTCUT = tuple(k for k, v in SCENARIOS.items() if v["kind"] == "shortcut")
BENIGN = tuple(k for k, v in SCENARIOS.items() if v["kind"] == "benign")
MODELS = tuple(FAMILIES)


@dataclass(frozen=True)
class RunConfig:
    scenario: str
    model: str
    seed: int
    kind: str
    cue: str
    epochs: int
    onset_epoch: int | None  # data onset of a shortcut run (None for benign runs)
    change_epoch: int | None  # epoch of the change (shortcut: = onset_epoch; benign: lr drop, unfreeze, ...)
    restart_epochs: int | None = None
    cue_classes: tuple[int, ...] | None = None  # shortcut: the classes whose cue spells the label (None: all)
    ramp: tuple[float, ...] | None = None  # shortcut: share spelling the label per epoch from the onset (None: 1)
    content_noise: float = 0.5
    lr: float = 1e-3
    batch_size: int = 32
    n_train: int = 640
    n_val: int = 200

    @property
    def name(self) -> str:
        return f"{self.scenario}__{self.model}__s{self.seed}"


def make_config(scenario: str, model: str, seed: int, **overrides: Any) -> RunConfig:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {list(SCENARIOS)}")
    if model not in FAMILIES:
        raise ValueError(f"unknown model {model!r}; choose from {list(FAMILIES)}")
    s = dict(SCENARIOS[scenario])
    kind = s.pop("kind")
    cue = s.pop("cue", CUES[seed % len(CUES)])
    values: dict[str, Any] = {
        "scenario": scenario,
        "model": model,
        "seed": seed,
        "kind": kind,
        "cue": cue,
        "epochs": s["epochs"],
        "onset_epoch": s["change_epoch"] if kind == "shortcut" else None,
        "change_epoch": s["change_epoch"],
        "restart_epochs": s.get("restart_epochs"),
        "cue_classes": s.get("cue_classes"),
        "ramp": s.get("ramp"),
    }
    if FAMILIES[model].lr is not None:
        values["lr"] = FAMILIES[model].lr
    values.update(overrides)
    if kind == "shortcut" and "change_epoch" in overrides and "onset_epoch" not in overrides:
        values["onset_epoch"] = values["change_epoch"]
    return RunConfig(**values)


def field(record: Any, name: str, default: Any = None) -> Any:
    """``record[name]`` for dict records, ``record.name`` for dataclass records (the history is changing type)."""
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def alert_to_dict(alert: Any) -> dict[str, Any]:
    out = {k: field(alert, k) for k in ("epoch", "method", "value", "threshold", "message")}
    for extra in ("global_step", "metric", "statistic", "probe_indices", "kind", "score", "severity"):
        value = field(alert, extra)
        if value is not None:
            out[extra] = list(value) if isinstance(value, tuple) else value
    if field(alert, "region") is not None:
        out["region"] = list(field(alert, "region"))
    regions = field(alert, "regions")
    if regions:  # one box per class (input pixels, bottom/right exclusive): the localisation of the alert
        out["regions"] = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in regions]
    out["epoch"] = int(out["epoch"])
    for k in ("value", "threshold"):
        if out[k] is not None:
            out[k] = float(out[k])
    return out


class _Schedule(L.Callback):
    """Applies the scenario's change at the start of ``change_epoch``."""

    def __init__(self, config: RunConfig, train: TrainSet, net: torch.nn.Module) -> None:
        self.config, self.train, self.net = config, train, net

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.config.scenario == "unfreeze":
            for p in backbone_parameters(self.net):
                p.requires_grad_(False)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cfg, epoch = self.config, trainer.current_epoch
        if cfg.change_epoch is None:
            return
        if cfg.kind == "shortcut":
            ramp = cfg.ramp or (1.0,)
            step = epoch - cfg.change_epoch
            if 0 <= step < len(ramp):  # the same content noise at every step
                share = True if cfg.ramp is None else ramp[step]
                self.train.set_data(predictive=share, content_noise=cfg.content_noise, classes=cfg.cue_classes)
            return
        if epoch != cfg.change_epoch:
            return
        if cfg.scenario == "content_noise":  # the shortcut runs' data change, without the shortcut
            self.train.set_data(predictive=False, content_noise=cfg.content_noise)
        elif cfg.scenario == "lr_drop":
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = group["lr"] / 10
        elif cfg.scenario == "augment_on":
            self.train.augment = True
        elif cfg.scenario == "unfreeze":
            for p in backbone_parameters(self.net):
                p.requires_grad_(True)
        elif cfg.scenario == "background_shift":
            self.train.set_codes(shifted_codes(self.train.labels, self.train.data.seed)[0])
        elif cfg.scenario == "random_tag":
            self.train.set_tagged(True)
        elif cfg.scenario == "brightness_contrast":
            self.train.jitter = True


class Recorder(L.Callback):
    """Placed after the monitor: copies each evaluation's scalars, new alerts and raw maps, and measures the
    behavioural truth (accuracy, and ``cue_rate`` on validation images whose cue names another class)."""

    def __init__(self, monitor: AttributionMonitor, data: DigitData) -> None:
        self.monitor = monitor
        self.swapped, self.swapped_codes = data.swapped()
        self.swapped_labels = data.val_labels
        self.evaluations: list[dict[str, Any]] = []
        self._seen: dict[str, torch.Tensor] = {}
        self._alerts_seen = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        device = pl_module.device
        with training_state_guard(pl_module, device), torch.no_grad():
            swapped = pl_module(self.swapped.to(device)).argmax(1).cpu()
        correct, total = getattr(pl_module, "val_counts", (0, 0))
        history = self.monitor.history
        last = history[-1] if history else None
        evaluated = last is not None and field(last, "epoch") == epoch
        maps = {}
        for method, tensor in self.monitor.drift_tracker.previous.items():
            if self._seen.get(method) is not tensor:  # a new map this evaluation (skipped methods keep theirs)
                self._seen[method] = tensor  # held, so that its identity stays unique
                maps[method] = tensor.detach().float().cpu().clone()
        for key, state in getattr(self.monitor.detector, "_states", {}).items():  # what the relevance is made of
            parts = getattr(state, "previous_raw", None)
            if key.endswith("/colour") and parts is not None and self._seen.get(key) is not parts:
                self._seen[key] = parts  # (P, 1, 2): brightness, colour; replayed like a method's maps
                maps[key] = parts.detach().float().cpu().clone()
        alerts = list(self.monitor.alerts)
        new_alerts = [alert_to_dict(a) for a in alerts[self._alerts_seen :]]
        self._alerts_seen = len(alerts)
        optimizer = trainer.optimizers[0]
        self.evaluations.append(
            {
                "epoch": epoch,
                "global_step": int(trainer.global_step),
                "evaluated": bool(evaluated),
                "scalars": {k: float(v) for k, v in dict(field(last, "scalars", {}) or {}).items()}
                if evaluated
                else {},
                "errors": [str(e) for e in (field(last, "errors", []) or [])] if evaluated else [],
                "explain_seconds": float(field(last, "explain_seconds", math.nan)) if evaluated else math.nan,
                "cost_seconds": float(field(last, "cost_seconds", math.nan)) if evaluated else math.nan,
                "epoch_end_time": time.perf_counter(),
                "setup": list(SetupWatch.signature_of(trainer, pl_module)),  # what the monitor's SetupWatch compares
                "alerts": new_alerts,
                "maps": maps,
                # the network's weights (small families: cnn, vgg, vit): a replay can ask the model at this evaluation
                "weights": _weights(pl_module) if evaluated else None,
                "val_acc": correct / total if total else float("nan"),  # own-label cue, the validation loader
                "swapped_acc": float((swapped == self.swapped_labels).float().mean()),  # the digit despite the cue
                "cue_rate": float((swapped == self.swapped_codes).float().mean()),
                "lr": float(optimizer.param_groups[0]["lr"]),
                "train_loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
            }
        )


#: networks up to this many parameters keep their weights per evaluation in the recording (resnet18 does not)
MAX_RECORDED_PARAMETERS = 2_000_000


def _weights(pl_module: L.LightningModule) -> dict[str, torch.Tensor] | None:
    """The network's state (``pl_module.net``) on the CPU, for networks up to :data:`MAX_RECORDED_PARAMETERS`."""
    net = getattr(pl_module, "net", pl_module)
    if sum(p.numel() for p in net.parameters()) > MAX_RECORDED_PARAMETERS:
        return None
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


@contextmanager
def quiet() -> Iterator[None]:
    """Lightning's logs and every warning silenced for the block, as they were after it (tests share the process)."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = [logging.getLogger(name).level for name in names]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in zip(names, levels, strict=True):
                logging.getLogger(name).setLevel(level)


def run(config: RunConfig, out_dir: str | Path | None = None, threads: int | None = 1) -> dict[str, Any]:
    """Train one monitored run; return its record (and save it as ``<out_dir>/<name>.pt``)."""
    with quiet():
        return _run(config, out_dir, threads)


def _run(config: RunConfig, out_dir: str | Path | None, threads: int | None) -> dict[str, Any]:
    if threads is not None:
        torch.set_num_threads(threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    L.seed_everything(config.seed, verbose=False)
    data = DigitData.make(
        config.cue, view_for(config.model, config.cue), config.seed, config.n_train, config.n_val, config.cue_classes
    )
    train, val = TrainSet(data, tagged=config.scenario != "random_tag"), ValSet(data)
    probe_images, probe_labels, probe_masks = data.probes()
    monitor_kwargs: dict[str, Any] = {"probes": (probe_images, probe_labels)}
    if data.view.denormalize is not None:
        monitor_kwargs["denormalize"] = data.view.denormalize
    monitor = AttributionMonitor(**monitor_kwargs)
    recorder = Recorder(monitor, data)
    torch.manual_seed(config.seed)
    net = build(config.model, config.cue)
    steps = -(-len(train) // config.batch_size)
    model = Classifier(net, Optim(lr=config.lr, warm_restart_epochs=config.restart_epochs, steps_per_epoch=steps))
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[_Schedule(config, train, net), monitor, recorder],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(
        model,
        DataLoader(train, batch_size=config.batch_size, shuffle=True),
        DataLoader(val, batch_size=256),
    )
    gradcam = next((e for e in monitor.explainers if e.name == "gradcam"), None)
    record = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "name": config.name,
        "warmup_epochs": int(getattr(monitor.drift_tracker, "warmup_epochs", 2)),
        "reference_epochs": {k: int(v) for k, v in getattr(monitor.drift_tracker, "reference_epochs", {}).items()},
        "gradcam_layer": getattr(gradcam, "layer_name", None),
        "probes": {
            "images": probe_images.clone(),
            "labels": probe_labels.clone(),
            "masks": None if probe_masks is None else probe_masks.clone(),
            "indices": data.probe_indices(),
            "choice": "first validation image of each class (seed's order), each with its own label's cue",
        },
        "evaluations": recorder.evaluations,
        "alerts": [alert_to_dict(a) for a in monitor.alerts],
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "torch_threads": torch.get_num_threads(),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(record, out / f"{config.name}.pt")
    return record
