"""Fuzzed validation loaders (issue 20): probes are what the model receives, or a named refusal, or one warning.

Each generated run (``trainer.fit``, ``validate`` or ``test``; 8x8 images, one training batch, Grad-CAM or IG with
2 steps) draws its probes from validation data of a random kind: a map-style dataset of tensors, numpy arrays or
dicts (sequential, shuffled, a subset sampler, a batch sampler, ``drop_last``); an ``IterableDataset`` with or
without ``__len__`` (batched or unbatched); a plain iterable or a sized list of batches. Crossed with ``collate_fn``
(default, uint8 -> float / 255, normalising, dict, an extra element), dtype (uint8, float16/32/64, with NaN/Inf
images), labels (classes, integral floats, one-hot, soft, names, none, classes the model lacks), batch transfer
hooks on the model or a datamodule (before/after transfer, stage-dependent, ``transfer_batch_to_device``), several
val loaders, ``limit_val_batches``, sanity steps, a first validation after epoch 2, mixed precision, and missing
validation. No third outcome: the run either

(a) completes, and every probe is exactly (as float32) an image ``validation_step`` received from the first
    validation loader, with the class the model received with it; the monitor's evaluation has no errors; what was
    converted, left out, too few or unlabeled is said once (and nothing of that kind otherwise);
(b) is refused before the first training (validation) step with a ``ValueError`` raised in ``lightning_xai`` whose
    message names the argument and the fix, and only where the data gives it reason; or
(c) has no validation to explain at (no val data, ``limit_val_batches=0``, no ``validation_step``, a loader of no
    batches): the run goes on and the user is told once.

200 examples by default, derandomised (~5 s here); ``LIGHTNING_XAI_FUZZ_EXAMPLES=2000`` runs more with a fresh draw.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from conftest import TinyCNN, trainer_kwargs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    default_collate,
)

from lightning_xai import AttributionMonitor, DriftPolicy, IntegratedGradients

EXAMPLES = int(os.environ.get("LIGHTNING_XAI_FUZZ_EXAMPLES", "200"))
SIZE, CLASSES = 8, 4
IMAGE_KEYS = ("image", "pixel_values", "pic")  # "pic": a key the monitor cannot know (a named refusal)

# ------------------------------------------------------------------------------------ batches as the user reads them


def image_of(batch: Any) -> Tensor:
    if isinstance(batch, dict):
        return next(batch[k] for k in IMAGE_KEYS if k in batch)
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def labels_of(batch: Any) -> Any:
    if isinstance(batch, dict):
        return batch.get("label")
    return batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None


def with_image(batch: Any, image: Tensor) -> Any:
    if isinstance(batch, dict):
        return {k: (image if k in IMAGE_KEYS else v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)([image, *batch[1:]])
    return image


def scale_collate(items: list[Any]) -> Any:
    """uint8 -> float / 255, as a val pipeline of stored bytes does."""
    batch = default_collate(items)
    x = image_of(batch)
    return with_image(batch, x.float() / 255 if x.dtype == torch.uint8 else x)


def normalise_collate(items: list[Any]) -> Any:
    """To float in 0..1, then normalised: the collate_fn of a numpy/bytes pipeline."""
    batch = default_collate(items)
    x = image_of(batch)
    return with_image(batch, ((x.float() / 255 if x.dtype == torch.uint8 else x) - 0.5) / 0.25)


def dict_collate(items: list[Any]) -> Any:
    batch = default_collate(items)
    labels = labels_of(batch)
    return {"image": image_of(batch)} | ({} if labels is None else {"label": labels})


def extra_collate(items: list[Any]) -> Any:
    """``(images, labels, positions)``: an extra element after the labels."""
    batch = default_collate(items)
    return image_of(batch), labels_of(batch), torch.arange(len(items))


COLLATES = {
    "default": None,
    "scale": scale_collate,
    "normalise": normalise_collate,
    "dict": dict_collate,
    "extra": extra_collate,
}

# ----------------------------------------------------------------------------------------- hooks, model, datamodule


class Before:
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x = image_of(batch)
        return with_image(batch, x.float() / 255 if x.dtype == torch.uint8 else x * 2)


class After:
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return with_image(batch, (image_of(batch) - 0.5) / 0.25)


class StageAware:
    """Augments training batches only, scales validation batches: what the model receives depends on the stage."""

    trainer: Any

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x = image_of(batch)
        return with_image(batch, x.flip(-1) if self.trainer.training else x * 3)


class Transfer:
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)  # type: ignore[misc]
        return with_image(batch, image_of(batch) * 0.5)


HOOKS: dict[str, tuple[type, ...]] = {
    "none": (),
    "before": (Before,),
    "after": (After,),
    "both": (Before, After),
    "stage": (StageAware,),
    "transfer": (Transfer,),
}


class Recording(TinyCNN):
    """Records what ``validation_step`` receives, per loader, and counts training steps."""

    def __init__(self, channels: int) -> None:
        super().__init__(num_classes=CLASSES, channels=channels)
        self.received: dict[int, list[tuple[Tensor, Any]]] = {}
        self.train_steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:  # type: ignore[override]
        x, labels = image_of(batch), labels_of(batch)
        if self.trainer.sanity_checking:
            return
        if x.ndim == 3:  # an unbatched loader
            x, labels = x[None], [labels]
        self.received.setdefault(dataloader_idx, []).append((x.detach().cpu().clone(), labels))
        self(x.to(self.head.weight.dtype))

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:  # type: ignore[override]
        self.validation_step(batch, batch_idx, dataloader_idx)


class NoStep(Recording):
    validation_step = None  # type: ignore[assignment]


class Data(L.LightningDataModule):
    def __init__(self, train: DataLoader, val: Any) -> None:
        super().__init__()
        self.train, self.val = train, val

    def train_dataloader(self) -> DataLoader:
        return self.train


class DataWithVal(Data):
    def val_dataloader(self) -> Any:
        return self.val

    def test_dataloader(self) -> Any:
        return self.val


_CLASSES: dict[tuple[str, type], type] = {}


def with_hooks(hooks: str, base: type) -> type:
    if (hooks, base) not in _CLASSES:
        _CLASSES[hooks, base] = type(f"{base.__name__}_{hooks}", (*HOOKS[hooks], base), {})
    return _CLASSES[hooks, base]


# ------------------------------------------------------------------------------------------------ validation data


class Items(Dataset):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class Stream(IterableDataset):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)


class SizedStream(Stream):
    def __len__(self) -> int:
        return len(self.items)


class Batches:
    """A plain iterable of batches (no DataLoader); ``sized``: a list of batches wrapped in a class."""

    def __init__(self, batches: list[Any], sized: bool) -> None:
        self.batches, self.sized = batches, sized

    def __iter__(self) -> Any:
        yield from self.batches

    def __len__(self) -> int:
        if not self.sized:
            raise TypeError("a stream")
        return len(self.batches)


@dataclass(frozen=True)
class Case:
    kind: str  # map | stream | sized_stream | batches | plain
    item: str  # tensor | numpy | dict
    loader: str  # seq | shuffle | subset | batch_sampler | drop_last | unbatched
    collate: str
    dtype: str
    bad: str  # none | one | all: images holding NaN / Inf
    labels: str  # int | float | onehot | none | soft | names | wide
    key: str  # the image key of dict items
    hooks: str
    datamodule: bool
    count: int
    batch_size: int
    loaders: str  # one | list | dict
    missing: str  # "" | no_val | limit0 | no_step
    entry: str  # fit | validate | test
    precision: str
    limit: int  # limit_val_batches / limit_test_batches (0: all batches)
    sanity: int  # num_sanity_val_steps
    late: bool  # the first validation after the second epoch (check_val_every_n_epoch=2, max_epochs=2)
    channels: int
    num_probes: int
    method: str


DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def label_value(kind: str, i: int) -> Any:
    c = i % CLASSES
    if kind == "onehot":
        return torch.nn.functional.one_hot(torch.tensor(c), CLASSES).float()
    if kind == "soft":
        return torch.full((CLASSES,), 0.1).index_fill(0, torch.tensor([c]), 0.7)
    return {"int": c, "float": float(c), "wide": i % 10, "names": f"class-{c}"}[kind]


def make_images(case: Case, seed: int) -> Tensor:
    x = torch.rand(case.count, case.channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    if case.dtype == "uint8":
        return (x * 255).round().to(torch.uint8)
    x = x.to(DTYPES[case.dtype])
    bad = {"none": 0, "one": min(1, case.count), "all": case.count}[case.bad]
    for i in range(bad):
        x[i, 0, i % SIZE, 0] = float("nan") if i % 2 == 0 else float("inf")
    return x


def make_items(case: Case, x: Tensor) -> list[Any]:
    out: list[Any] = []
    for i in range(case.count):
        image: Any = x[i].numpy() if case.item == "numpy" else x[i]
        label = None if case.labels == "none" else label_value(case.labels, i)
        if case.item == "dict":
            out.append({case.key: image} | ({} if label is None else {"label": label}))
        else:
            out.append(image if label is None else (image, label))
    return out


def val_source(case: Case, seed: int) -> Any:
    x = make_images(case, seed)
    items = make_items(case, x)
    collate, size = COLLATES[case.collate], case.batch_size
    if case.kind in ("batches", "plain"):
        batches = [(collate or default_collate)(items[i : i + size]) for i in range(0, len(items), size)]
        return Batches(batches, sized=case.kind == "batches")
    if case.kind in ("stream", "sized_stream"):
        stream = SizedStream(items) if case.kind == "sized_stream" else Stream(items)
        if case.loader == "unbatched":
            return DataLoader(stream, batch_size=None)
        return DataLoader(stream, batch_size=size, collate_fn=collate)
    data: Dataset = Items(items)
    if case.item == "tensor" and case.labels == "none":
        data = TensorDataset(x)
    elif case.item == "tensor" and case.labels != "names" and case.count:
        data = TensorDataset(x, torch.stack([torch.as_tensor(label_value(case.labels, i)) for i in range(case.count)]))
    if case.loader == "unbatched":
        return DataLoader(data, batch_size=None)
    if case.loader == "batch_sampler":
        return DataLoader(data, batch_sampler=BatchSampler(SequentialSampler(data), size, False), collate_fn=collate)
    sampler = SubsetRandomSampler(list(range(0, case.count, 2))) if case.loader == "subset" else None
    return DataLoader(
        data,
        batch_size=size,
        shuffle=case.loader == "shuffle",
        sampler=sampler,
        drop_last=case.loader == "drop_last",
        collate_fn=collate,
    )


def other_loader(channels: int) -> DataLoader:
    """A second validation loader, of images the first never holds (values above 5)."""
    x = 5 + torch.rand(4, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(99))
    return DataLoader(TensorDataset(x, torch.arange(4)), batch_size=4)


# ------------------------------------------------------------------------------------------------------ strategy


#: the draw converts each batch as Lightning's precision plugin does before the batch hooks
#: (``trainer.precision_plugin.convert_input``): the model receives float64 / bfloat16 images there
PRECISIONS: tuple[str, ...] = ("bf16-mixed", "bf16-true", "64-true")
KINDS = ("map", "stream", "sized_stream", "batches", "plain")
MAP_LOADERS = ("seq", "shuffle", "subset", "batch_sampler", "drop_last")
LABELS = ("int", "float", "onehot", "none", "soft", "names", "wide")
ITEMS = ("tensor", "numpy", "dict")
ENTRIES = ("fit", "validate", "test")


def often(value: Any, *others: Any) -> Any:
    """``value`` about three times in four, else one of ``others``."""
    return st.sampled_from([value] * 3 * len(others) + list(others))


@st.composite
def cases(draw: Any) -> Case:
    kind = draw(st.sampled_from(["map", "map", *KINDS]))
    loader = "seq"
    count = draw(often(12, 0, 1, 3, 6, 20))
    if kind == "map" and count:  # PyTorch refuses a shuffled empty dataset itself
        loader = draw(st.sampled_from(["subset", "unbatched", *MAP_LOADERS]))
    elif kind in ("stream", "sized_stream"):
        loader = draw(st.sampled_from(["seq", "unbatched"]))
    labels = draw(st.sampled_from(["int", *LABELS]))
    collate = "default" if loader == "unbatched" else draw(st.sampled_from(sorted(COLLATES)))
    dtype = draw(st.sampled_from(["uint8", "float32", *DTYPES]))
    item = draw(st.sampled_from(ITEMS))
    entry = draw(often(*ENTRIES))
    return Case(
        kind=kind,
        item=item,
        loader=loader,
        collate="default" if labels == "none" and collate == "extra" else collate,
        dtype=dtype,
        bad="none" if dtype == "uint8" else draw(often("none", "one", "all")),
        labels=labels,
        key=draw(often("image", "pixel_values", "pic")) if item == "dict" else "image",
        hooks=draw(st.sampled_from(sorted(HOOKS))),
        datamodule=draw(often(False, True)),
        count=count,
        batch_size=draw(st.sampled_from([1, 4, 8])),
        loaders=draw(often("one", "list", "dict")),
        missing=draw(often("", "no_val", "limit0", "no_step")) if entry == "fit" else "",
        entry=entry,
        precision=draw(often("32-true", *PRECISIONS)),
        limit=draw(often(0, 1, 2)),
        sanity=draw(often(0, 2)),
        late=entry == "fit" and draw(often(False, True)),
        channels=draw(st.sampled_from([1, 3])),
        num_probes=draw(st.sampled_from([1, 4, 8])),
        method=draw(often("gradcam", "integrated_gradients")),
    )


# --------------------------------------------------------------------------------------------------- the property

ARGUMENTS = ("probes", "num_probes", "target", "methods", "GradCam", "forward_fn")
SILENT_NO_OP = re.compile(r"does nothing|never explained|nothing is explained")


def raised_in_lightning_xai(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and f"{os.sep}lightning_xai{os.sep}" in last.tb_frame.f_code.co_filename


def empty(case: Case) -> bool:
    """The first validation loader yields no image."""
    return case.count == 0 or (case.loader == "drop_last" and case.count < case.batch_size)


def no_finite(case: Case) -> bool:
    """Every image the first validation loader yields holds NaN or Inf."""
    return case.dtype != "uint8" and (case.bad == "all" or (case.bad == "one" and case.count == 1))


def steps(case: Case) -> int:
    """Training steps of a run that is not refused."""
    return 0 if case.entry != "fit" else 2 if case.late else 1


def check_refusal(case: Case, model: Recording, err: ValueError) -> str:
    message = str(err)
    assert model.train_steps == 0 and not model.received, f"refused after training or validation started: {err!r}"
    assert raised_in_lightning_xai(err), f"not raised by lightning_xai: {err!r}"
    named = [a for a in ARGUMENTS if f"`{a}" in message]
    assert named, f"the message names no argument: {err!r}"
    assert re.search(r"\b(pass|use|set|add|give|move)\b", message, re.IGNORECASE), f"no fix in: {err!r}"
    allowed = empty(case) or no_finite(case) or case.key == "pic" or case.labels == "wide"
    assert allowed, f"valid validation data refused: {err!r}"
    return f"refused:{named[0]}"


def check_no_validation(case: Case, model: Recording, monitor: AttributionMonitor, messages: list[str]) -> str:
    """Nothing to explain at: the run goes on and the user is told once (for a validate/test loader of no batches,
    Lightning skips the loop before any callback hook, and says so itself)."""
    assert model.train_steps == steps(case) and monitor.evaluations == 0
    told = [m for m in messages if m.startswith("AttributionMonitor") and SILENT_NO_OP.search(m)]
    if not told and empty(case) and case.entry != "fit":
        told = [m for m in messages if re.search(r"Total length of `\w+` across ranks is zero", m)]
    assert len(told) == 1, f"{case.missing or 'empty loader'}: the monitor must say so once, said {messages}"
    return f"no_validation:{case.missing or 'empty'}"


def class_of(kind: str, label: Any) -> int | None:
    if kind in ("int", "float", "wide"):
        return int(label)
    return int(torch.as_tensor(label).argmax()) if kind == "onehot" else None


def check_completed(case: Case, model: Recording, monitor: AttributionMonitor, said: list[str]) -> str:
    assert model.train_steps == steps(case) and monitor.evaluations == 1, (model.train_steps, monitor.evaluations)
    errors = [e for e in monitor.history[-1].errors if "every probe's map is zero" not in e]  # said, not a failure
    assert not errors, errors
    probes = monitor.probes
    assert probes is not None and probes.images.dtype == torch.float32
    assert bool(torch.isfinite(probes.images).all())
    received: list[tuple[Tensor, int | None]] = []
    integer = False
    for x, labels in model.received.get(0, []):
        integer |= not x.is_floating_point()
        received += [
            (x[i].float(), None if labels is None else class_of(case.labels, labels[i])) for i in range(len(x))
        ]
    finite = [(x, c) for x, c in received if bool(torch.isfinite(x).all())]
    assert len(probes) == min(case.num_probes, len(finite)), f"{len(probes)} probes of {len(finite)} finite images"
    unused = list(range(len(finite)))
    for p, probe in enumerate(probes.images):
        match = next((j for j in unused if torch.equal(finite[j][0], probe)), None)
        assert match is not None, f"probe {p} is no image validation_step received from the first loader"
        unused.remove(match)
        if probes.labels is not None:
            assert int(probes.labels[p]) == finite[match][1], f"probe {p}: label {int(probes.labels[p])}"
    labelled = case.labels in ("int", "float", "onehot", "wide")
    assert (probes.labels is not None) == labelled, f"labels {case.labels}: {probes.labels}"
    expected = {
        "converted": integer,
        "left out": len(finite) < len(received),
        "too few": len(finite) < case.num_probes,
        "unlabeled": case.labels in ("soft", "names"),
    }
    patterns = {
        "converted": "images after its collate_fn and the batch hooks",
        "left out": "hold NaN or Inf and are not used",
        "too few": "usable images",
        "unlabeled": "probes are unlabeled",
    }
    for what, pattern in patterns.items():
        count = sum(pattern in m for m in said)
        assert count == int(expected[what]), f"{what}: expected {int(expected[what])} warning(s), said {said}"
    return "completed"


def run(case: Case, tmp_path: str, model: Recording, callbacks: list[Any], train: DataLoader, val: Any) -> None:
    """``trainer.fit`` / ``validate`` / ``test`` as the case says, with the val data (or a datamodule holding it)."""
    limit = 0 if case.missing == "limit0" else (case.limit or 1.0)
    limits = {"limit_val_batches": limit, "limit_test_batches": limit}
    schedule = {"max_epochs": 2, "check_val_every_n_epoch": 2} if case.late else {"max_epochs": 1}
    kwargs = trainer_kwargs(tmp_path, callbacks=callbacks, limit_train_batches=1, **limits, **schedule)
    trainer = L.Trainer(**{**kwargs, "precision": case.precision, "num_sanity_val_steps": case.sanity})
    data: dict[str, Any] = {}
    if case.datamodule:
        data["datamodule"] = with_hooks(case.hooks, Data if val is None else DataWithVal)(train, val)
    if case.entry == "fit":
        trainer.fit(model, **(data or {"train_dataloaders": train, "val_dataloaders": val}))
    else:
        getattr(trainer, case.entry)(model, verbose=False, **(data or {"dataloaders": val}))


def run_case(case: Case, seed: int, tmp_path: str) -> str:
    base = NoStep if case.missing == "no_step" else Recording
    model = (base if case.datamodule else with_hooks(case.hooks, base))(case.channels)
    x = torch.rand(8, case.channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 1))
    train = DataLoader(TensorDataset(x, torch.arange(8) % CLASSES), batch_size=8)
    val = None if case.missing == "no_val" else val_source(case, seed)
    if val is not None and case.loaders != "one":
        other = other_loader(case.channels)
        val = [val, other] if case.loaders == "list" else {"first": val, "other": other}
    method = IntegratedGradients(n_steps=2) if case.method == "integrated_gradients" else case.method
    monitor = AttributionMonitor(num_probes=case.num_probes, methods=(method,), drift=DriftPolicy(detector=None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run(case, tmp_path, model, [monitor], train, val)
        except ValueError as err:
            return check_refusal(case, model, err)
    messages = [str(w.message) for w in caught]
    if case.missing or (empty(case) and monitor.evaluations == 0):
        return check_no_validation(case, model, monitor, messages)
    if case.limit:  # the draw takes any image of the loader, not only those of the batches validated: what
        # validation_step receives from the whole loader (the lead decides whether the draw should follow the limit)
        model.received = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(dataclasses.replace(case, entry="validate" if case.entry == "fit" else case.entry, limit=0, sanity=0),
                tmp_path, model, [], train, val)  # fmt: skip
    return check_completed(case, model, monitor, [m for m in messages if m.startswith("AttributionMonitor")])


OUTCOMES: dict[str, int] = {}
COVERED: set[tuple[str, Any]] = set()  # (field, value) of the completed examples


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 200,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(case=cases(), seed=st.integers(0, 2**16))
def test_every_loader_gives_the_models_images_or_a_named_refusal(case: Case, seed: int, tmp_path: Any) -> None:
    outcome = run_case(case, seed, str(tmp_path))
    event(outcome)
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1
    if outcome == "completed":
        COVERED.update(dataclasses.asdict(case).items())


def test_the_fuzz_reaches_every_outcome() -> None:
    """The examples above complete, are refused and meet missing validation (runs after them in this module)."""
    if not OUTCOMES:  # run alone
        return
    completed = OUTCOMES.get("completed", 0)
    refused = sum(v for k, v in OUTCOMES.items() if k.startswith("refused"))
    missing = sum(v for k, v in OUTCOMES.items() if k.startswith("no_validation"))
    assert completed >= 100 and refused >= 10 and missing >= 10, OUTCOMES
    every = {
        "kind": KINDS,
        "loader": (*MAP_LOADERS, "unbatched"),
        "item": ITEMS,
        "collate": tuple(COLLATES),
        "dtype": tuple(DTYPES),
        "labels": LABELS,
        "hooks": tuple(HOOKS),
        "datamodule": (False, True),
        "loaders": ("one", "list", "dict"),
        "entry": ENTRIES,
        "precision": ("32-true", *PRECISIONS),
        "bad": ("none", "one"),
        "late": (False, True),
    }
    missed = [(field, v) for field, values in every.items() for v in values if (field, v) not in COVERED]
    assert not missed, f"no completed example with {missed}"
