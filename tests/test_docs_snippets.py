"""Every ```python snippet in README.md and docs/*.md runs, so the docs cannot go stale.

Each snippet runs in a fresh namespace that holds what the prose says the reader has: ``model`` (a small
LightningModule with a conv ``features`` block), ``train_loader``/``val_loader``, ``mean``/``std`` of the data,
``probes``/``labels``, ``background_images``, ``patch_ids`` (a feature mask) and ``my_slic`` (superpixels). With
``LIGHTNING_XAI_DOCS_FAST=1`` (the default here) every ``Trainer`` is capped at 2 epochs on the tiny data, inside a
temporary working directory. After a snippet, a ``trainer`` it built but did not fit is fitted, and a ``monitor`` it
built without a trainer is run in one, so that arguments that are only checked at setup are checked too.

A snippet that cannot run (pseudo-code, a signature) is marked in the Markdown by ``<!-- docs-test: skip REASON -->``
on the line before its fence; it is then reported as skipped with that reason, never silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FAST = os.environ.get("LIGHTNING_XAI_DOCS_FAST", "1") != "0"
MAX_EPOCHS = 2
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^```\s*$", re.M | re.S)


@dataclass
class Snippet:
    path: Path
    line: int
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(lang: str = "python") -> list[Snippet]:
    """The fenced blocks of ``lang`` in the docs, with the skip reason written before them (if any)."""
    found = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group("lang") != lang:
                continue
            before = text[: match.start()].rstrip().splitlines()
            skip = SKIP.fullmatch(before[-1].strip()) if before else None
            line = text.count("\n", 0, match.start()) + 1
            found.append(
                Snippet(path, line, match.group("code"), skip.group("reason") or "no reason" if skip else None)
            )
    return found


SNIPPETS = snippets()


def test_the_docs_have_python_snippets_and_none_indexes_history_as_a_dict() -> None:
    assert len(SNIPPETS) >= 6, [s.id for s in SNIPPETS]  # a collector that finds none must fail
    assert all(s.skip != "no reason" for s in SNIPPETS), "say why a snippet is skipped"
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        # `history` holds Evaluation objects: history[-1].errors, never history[-1]["errors"]
        assert not re.search(r"history\[[^\]]*\]\s*\[", text), f"{path.name} indexes monitor.history as a dict"


def test_every_tensorboard_command_keeps_every_image() -> None:
    """TensorBoard keeps 10 images per tag unless told otherwise (and ``images=0`` shows none in 2.21)."""
    sources = [*FILES, *sorted((ROOT / "examples").glob("*.py"))]
    commands = [
        (p.name, m.group(0)) for p in sources for m in re.finditer(r"tensorboard --logdir[^\n`]*", p.read_text())
    ]
    assert len(commands) >= 5
    flag = ("--samples_per_plugin images=1000", "{TENSORBOARD_SAMPLES}")  # the demo prints its constant
    missing = [(name, c) for name, c in commands if not any(f in c for f in flag)]
    assert not missing


def test_the_demo_tables_are_written_by_the_docs_script_with_the_demo_columns() -> None:
    """README.md and docs/shortcut_detection.md carry the demo's table between the markers that
    ``tools/docs_images.py`` (``make docs-images``) rewrites from a real run, with the columns the demo prints."""
    from examples.shortcut_detection import COLUMNS

    header = (
        f"{'epoch':>5} {'clean':>6} {'mism':>6} {'decoy':>6} " + " ".join(f"{n:>8}" for n, _ in COLUMNS) + "  alert"
    )
    for name in ("README.md", "docs/shortcut_detection.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        block = re.search(r"<!-- demo-table -->\n```text\n(.*?)\n```\n<!-- /demo-table -->", text, re.S)
        assert block is not None, f"{name}: no demo table between the markers"
        lines = block.group(1).splitlines()
        assert lines[0] == header.rstrip(), name
        assert [line.split()[0] for line in lines[1:11]] == [str(e) for e in range(10)], name
        assert lines[-1].startswith(("First alert at epoch", "No alert")), name


class DocsCNN(L.LightningModule):
    """What the snippets call ``model``: a conv ``features`` block (``features.3`` is a layer) and a linear head."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def reader_namespace() -> dict[str, Any]:
    """What the prose around the snippets says the reader already has."""
    g = torch.Generator().manual_seed(0)
    labels_all = torch.arange(96) % 4
    images = torch.rand(96, 1, 16, 16, generator=g) * 0.2
    for i, c in enumerate(labels_all.tolist()):  # a bright square whose place says the class
        r, k = divmod(c, 2)
        images[i, 0, 2 + 7 * r : 7 + 7 * r, 2 + 7 * k : 7 + 7 * k] += 0.8
    mean, std = float(images.mean()), float(images.std())
    normalised = (images - mean) / std
    train = TensorDataset(normalised[:64], labels_all[:64])
    val = TensorDataset(normalised[64:], labels_all[64:])
    patch = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)

    def my_slic(batch: Tensor) -> Tensor:
        return patch.expand(batch.shape[0], -1, -1).clone()

    return {
        "model": DocsCNN(),
        "train_loader": DataLoader(train, batch_size=16, shuffle=True),
        "val_loader": DataLoader(val, batch_size=16),
        "mean": mean,
        "std": std,
        "probes": normalised[64:72],
        "labels": labels_all[64:72],
        "background_images": normalised[:8],
        "patch_ids": patch.view(1, 1, 16, 16),
        "my_slic": my_slic,
    }


class ShortTrainer(L.Trainer):
    """``L.Trainer`` as the snippets call it, capped at a few epochs on the CPU without progress bars."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["max_epochs"] = min(int(kwargs.get("max_epochs") or MAX_EPOCHS), MAX_EPOCHS)
        kwargs.setdefault("accelerator", "cpu")
        kwargs.setdefault("devices", 1)
        kwargs.setdefault("enable_progress_bar", False)
        kwargs.setdefault("enable_model_summary", False)
        kwargs.setdefault("num_sanity_val_steps", 0)
        kwargs.setdefault("log_every_n_steps", 1)
        super().__init__(*args, **kwargs)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_the_snippet_runs(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if snippet.skip is not None:
        pytest.skip(f"marked in the docs: {snippet.skip}")
    from lightning_xai import AttributionMonitor

    monkeypatch.chdir(tmp_path)  # TensorBoardLogger("logs") and the like write here
    if FAST:
        monkeypatch.setattr(L, "Trainer", ShortTrainer)
    L.seed_everything(0, verbose=False)
    namespace = reader_namespace()
    exec(compile(snippet.code, snippet.id, "exec"), namespace)  # noqa: S102 - the docs are ours
    trainer = namespace.get("trainer")
    monitor = namespace.get("monitor")
    if isinstance(trainer, L.Trainer) and trainer.state.fn is None:  # built, never run
        trainer.fit(namespace["model"], namespace["train_loader"], namespace["val_loader"])
    elif isinstance(monitor, AttributionMonitor) and not monitor.history:
        runner = L.Trainer(max_epochs=MAX_EPOCHS, logger=False, enable_checkpointing=False, callbacks=[monitor])
        runner.fit(namespace["model"], namespace["train_loader"], namespace["val_loader"])
    if isinstance(monitor, AttributionMonitor):
        assert monitor.history, "the monitor in the snippet never evaluated"


# the 31 keyword arguments of the constructor before issue 19, in their order
OLD_ARGUMENTS = (
    "probes num_probes methods target gradcam_layer gradcam_reshape ig_steps ig_baseline ig_internal_batch_size "
    "every_n_epochs on_drift denormalize seed warmup_epochs reference_epoch detector drift_rules probe_threshold topk "
    "colormap log_heatmaps log_grids tile_size output_transform probe_masks background_logging forward_fn "
    "max_seconds_per_epoch max_overhead quality name"
).split()
GONE = ("gradcam_layer", "gradcam_reshape", "ig_steps", "ig_baseline", "ig_internal_batch_size", "drift_rules")
# names of the code that issue 19 removed or merged (methods, helpers, modules): only the migration page names them
GONE_CODE = (
    "limit_batch", "reduce_steps", "step_cap", "MethodOptions", "monitor_state_key", "from_monitor",
    "monitor_settings", "monitor_schedule", r"_checks\.py", r"_state_key\.py", r"_spawn\.py", r"thumbs\.py",
    r"grid\.py", r"_batches\.py", r"font\.py", r"font_data\.py", r"charts\.py", r"visualize/evidence\.py",
)  # fmt: skip
GONE_RE = re.compile(r"\b(" + "|".join((*GONE, *GONE_CODE, "output_transform")) + r")\b")


def _markdown(default: Any) -> str:
    """A default as the docs' tables write it: Python's repr with double quotes."""
    return f"`{default!r}`".replace("'", '"')


def test_the_readme_tables_list_every_argument_and_settings_field_with_its_default() -> None:
    """README's Arguments section: the constructor's parameters, then every field of DriftPolicy, Display and Budget,
    each with the default the code has."""
    import dataclasses
    import inspect

    from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Arguments") : text.index("### TensorBoard tags")]
    rows = dict(re.findall(r"^\| `(\w+)` \| (`[^|]*`) \|", section, re.M))
    parameters = list(inspect.signature(AttributionMonitor.__init__).parameters.values())[1:]
    assert len(parameters) == 12
    expected = {p.name: _markdown(p.default) for p in parameters}
    for kind in (DriftPolicy, Display, Budget):
        expected.update({f.name: _markdown(f.default) for f in dataclasses.fields(kind)})
    assert {k: rows.get(k) for k in expected} == expected
    assert set(rows) == set(expected), "a row for something the constructor and the settings do not have"


def test_the_migration_table_names_every_old_argument_and_only_new_names_elsewhere() -> None:
    """docs/migration.md has one row per argument of the old constructor; no other page uses the names that are
    gone (``gradcam_layer``, ``ig_steps``, ``drift_rules``, ``output_transform``, ...), and every
    ``AttributionMonitor(...)`` call in a snippet uses only the 12 parameters."""
    import ast
    import inspect

    from lightning_xai import AttributionMonitor

    table = (ROOT / "docs" / "migration.md").read_text(encoding="utf-8")
    section = table[table.index("## Every old argument") : table.index("## Attributes of the monitor")]
    firsts = [re.findall(r"`(\w+)", cell) for cell in re.findall(r"^\| ([^|]+) \|", section, re.M)[1:]]
    assert {name for names in firsts for name in names} >= set(OLD_ARGUMENTS)
    assert "cooldown" in section and "DriftPolicy(cooldown=C)" in section and "forward_fn=lambda module, x" in section
    for path in FILES:
        if path.name == "migration.md":
            continue
        text = path.read_text(encoding="utf-8")
        prose = FENCE.sub(lambda m: "" if m.group("lang") in ("text", "bash") else m.group(0), text)
        assert not GONE_RE.findall(prose), f"{path.name} still names {sorted(set(GONE_RE.findall(prose)))}"
    parameters = set(list(inspect.signature(AttributionMonitor.__init__).parameters)[1:])
    calls = 0
    for snippet in SNIPPETS:
        if snippet.skip is not None:
            continue
        for node in ast.walk(ast.parse(snippet.code)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AttributionMonitor":
                calls += 1
                assert {k.arg for k in node.keywords} <= parameters, snippet.id
    assert calls >= 6


def test_the_method_options_table_has_every_constructor_argument_with_its_default() -> None:
    """docs/methods.md's Options table: each class's row lists exactly its constructor's arguments and defaults."""
    import inspect

    import lightning_xai

    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    rows = [row for row in re.findall(r"^\| `(\w+)` \| (.*) \|$", text, re.M) if row[0][0].isupper()]
    assert len(rows) >= 10
    for name, cell in rows:
        cls = getattr(lightning_xai, name)
        documented = dict(re.findall(r"`(\w+)=([^`]*)`", cell))
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        assert documented == {p.name: repr(p.default).replace("'", '"') for p in parameters}, name


def test_the_architecture_page_lists_every_module_of_the_package() -> None:
    """docs/architecture.md's "Every module" tables name exactly the modules under ``lightning_xai/``, each under its
    package's heading, so the page cannot keep a merged module or miss a new one."""
    package = ROOT / "lightning_xai"
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("## Every module") :]
    documented: set[str] = set()
    folder = ""
    for line in section.splitlines():
        if heading := re.match(r"^`(\w+)/`", line):
            folder = heading.group(1) + "/"
        elif line.startswith("Package root"):
            folder = ""
        documented.update(folder + name for name in re.findall(r"^\| `(\w+\.py)` \|", line))
    existing = {path.relative_to(package).as_posix() for path in package.rglob("*.py")}
    assert documented == existing, (sorted(existing - documented), sorted(documented - existing))


def test_the_architecture_layers_table_is_the_import_contract() -> None:
    """docs/architecture.md's layers table names, layer by layer, the modules of pyproject.toml's import-linter
    contract (which ``lint-imports`` enforces), so a module added to a layer there is added on the page too."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's TOML reader")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = config["tool"]["importlinter"]["contracts"]
    layers = [re.split("[:|]", layer) for layer in contract["layers"]]
    enforced = [{name.strip().removeprefix("lightning_xai.") for name in layer} for layer in layers]
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("## The layers contract") : text.index("## Every module")]
    rows = re.findall(r"^\| (\d) \| (.*) \|$", section, re.M)
    assert [int(n) for n, _ in rows] == list(range(1, len(enforced) + 1))
    assert [set(re.findall(r"`(\w+)`", cell)) for _, cell in rows] == enforced
