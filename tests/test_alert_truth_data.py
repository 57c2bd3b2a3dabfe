"""The alert-truth suite's data (benchmarks/alert_truth): the old cues and views are unchanged, the colour cues, the
new shortcut and benign data changes, the views' shapes and the ViT family. No training; a few seconds."""

from __future__ import annotations

import colorsys
import hashlib
from types import SimpleNamespace

import pytest
import torch

from benchmarks.alert_truth.data import (
    CUES,
    DigitData,
    TrainSet,
    View,
    make_cue,
    palette,
    shifted_codes,
)
from benchmarks.alert_truth.models import FAMILIES, Classifier, Optim, backbone_parameters, build, view_for
from benchmarks.alert_truth.scenarios import RAMP, _Schedule, make_config
from lightning_xai.explain.layers import transformer_gradcam_layer

SUBSET = (0, 1, 2, 3, 4)


def digest(*tensors: torch.Tensor) -> str:
    """A short hash of the values (floats rounded to 1e-4, so a last-bit difference of a CPU's kernels does not
    count, any real change does) and shapes."""
    h = hashlib.sha256()
    for x in tensors:
        x = torch.as_tensor(x)
        if x.dtype.is_floating_point:
            x = torch.round(x.double() * 1e4)
        h.update(str(tuple(x.shape)).encode())
        h.update(x.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def old_path(cue: str, view: str) -> list[torch.Tensor]:
    """What the first version's scenarios drew from the data of seed 1 (only calls the old code had)."""
    data = DigitData.make(cue, view, 1)
    parts = [data.val_images(), *data.swapped(), *[p for p in data.probes() if p is not None]]
    train = TrainSet(data)
    parts += [train.images, train.codes]
    control = TrainSet(data)
    control.set_data(predictive=False, content_noise=0.5)  # content_noise
    parts += [control.images, control.content, control.codes]
    train.set_data(predictive=True, content_noise=0.5)  # a shortcut's onset
    parts += [train.images, train.content, train.codes]
    train.augment = True  # augment_on
    parts.append(torch.stack([train[i][0] for i in range(6)]))
    return parts


#: computed with the code before the colour cues, views and the new scenarios were added (commit e262154)
OLD_DATA = {
    ("corner_patch", "gray32"): "97c10f66412f9dbc",
    ("corner_patch", "rgb64"): "fdef26ee163ed7f9",
    ("texture", "gray32"): "daf535f639825f53",
    ("texture", "rgb64"): "00b3b83f8ad13974",
    ("position_mark", "gray32"): "fd18895b01f403a9",
    ("position_mark", "rgb64"): "6bf5ebe20efbb16f",
}
OLD_INIT = {"cnn": "3581e24ce714ca65", "vgg": "542ac8dd6563ce65", "resnet18": "db3817da5ba1d5fd"}


def init_digest(net: torch.nn.Module) -> str:
    return digest(torch.cat([t.flatten() for t in net.state_dict().values() if t.dtype.is_floating_point]))


@pytest.mark.parametrize(("cue", "view"), sorted(OLD_DATA))
def test_old_cues_and_views_give_the_old_tensors(cue: str, view: str) -> None:
    assert digest(*old_path(cue, view)) == OLD_DATA[(cue, view)]
    assert view_for("cnn", cue) == view_for("vgg", cue) == "gray32" and view_for("resnet18", cue) == "rgb64"


def test_old_families_initialise_as_before_for_gray_cues() -> None:
    for name in OLD_INIT:
        for cue in CUES:
            with torch.random.fork_rng():
                torch.manual_seed(1)
                assert init_digest(build(name, cue)) == OLD_INIT[name], (name, cue)


def test_the_digest_sees_a_change() -> None:
    parts = old_path("corner_patch", "gray32")
    assert digest(*parts) == OLD_DATA[("corner_patch", "gray32")]
    parts[0] = parts[0].clone()
    parts[0][0, 0, 0, 0] += 1e-3
    assert digest(*parts) != OLD_DATA[("corner_patch", "gray32")]


def test_colour_cues_paint_the_codes_colour() -> None:
    codes = torch.arange(10)
    background, strokes = make_cue("background_colour"), make_cue("object_colour")
    black, white = torch.zeros(10, 1, 32, 32), torch.ones(10, 1, 32, 32)
    for cue, on_black, on_white in (
        (background, palette(0.5, 0.6), torch.ones(10, 3)),  # the background takes the colour, strokes stay white
        (strokes, torch.zeros(10, 3), palette(0.8, 1.0)),  # the strokes take it, the background stays black
    ):
        assert cue.channels == 3 and not cue.localised and cue.masks(codes) is None
        for images, colours in ((black, on_black), (white, on_white)):
            out = cue.stamp(images, codes)
            assert out.shape == (10, 3, 32, 32)
            assert torch.allclose(out, colours.view(10, 3, 1, 1).expand(-1, -1, 32, 32))
    for saturation, value in ((0.5, 0.6), (0.8, 1.0)):  # ten hues 36 degrees apart, distinguishable
        colours = palette(saturation, value)
        hues = [colorsys.rgb_to_hsv(*c.tolist())[0] * 360 for c in colours]
        assert hues == pytest.approx([36.0 * k for k in range(10)], abs=0.5)
        distance = torch.cdist(colours, colours) + torch.eye(10)
        assert float(distance.min()) > 0.12  # neighbouring hues of the background palette: 0.13
    data = DigitData.make("background_colour", "rgb32", 0, n_train=10, n_val=100)
    images, labels, _ = data.probes()
    stroke = data.val_clean[data.probe_indices()] > 0.9  # the digit stays visible: white strokes on the colour
    assert bool((images.min(1, keepdim=True).values[stroke] > 0.9).all())
    with pytest.raises(ValueError):
        View("gray32")(images)


def test_views_shapes_and_colour_through_every_view() -> None:
    expected = {"gray32": (1, 32), "rgb32": (3, 32), "rgb64": (3, 64)}
    assert view_for("cnn", "object_colour") == view_for("vgg", "background_colour") == "rgb32"
    assert view_for("vit", "texture") == view_for("vit", "object_colour") == "rgb32"
    assert view_for("resnet18", "object_colour") == "rgb64"
    for model in FAMILIES:
        for cue in (*CUES, "background_colour", "object_colour"):
            view = view_for(model, cue)
            data = DigitData.make(cue, view, 0, n_train=10, n_val=100)
            images, labels, masks = data.probes()
            c, s = expected[view]
            assert images.shape == (10, c, s, s) and labels.tolist() == list(range(10))
            assert masks is None or masks.shape == (10, s, s)
            if view == "gray32":
                continue
            rgb = images
            if view == "rgb64":  # colour survives the normalisation; a gray cue gives equal channels
                mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in data.view.denormalize)
                rgb = images * std + mean
            spread = float((rgb.max(1).values - rgb.min(1).values).max())
            assert (spread > 0.2) if cue in ("background_colour", "object_colour") else (spread < 1e-5)
            net = build(model, cue)
            first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
            assert first.in_channels == c
            assert net(images[:2]).shape == (2, 10)


def test_gray_cue_in_rgb32_is_the_gray_image_three_times() -> None:
    gray = DigitData.make("texture", "gray32", 2, n_train=10, n_val=100).val_images()
    rgb = DigitData.make("texture", "rgb32", 2, n_train=10, n_val=100).val_images()
    assert torch.equal(rgb, gray.expand(-1, 3, -1, -1))


def schedule(scenario: str, model: str = "cnn", seed: int = 0) -> tuple[TrainSet, _Schedule]:
    config = make_config(scenario, model, seed, n_train=400, n_val=100)
    data = DigitData.make(config.cue, view_for(model, config.cue), seed, 400, 100, config.cue_classes)
    train = TrainSet(data, tagged=scenario != "random_tag")
    return train, _Schedule(config, train, torch.nn.Identity())


def epoch_start(callback: _Schedule, epoch: int) -> None:
    trainer = SimpleNamespace(current_epoch=epoch, optimizers=[torch.optim.SGD([torch.zeros(1)], lr=0.1)])
    callback.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]


def test_class_subset_spells_only_classes_0_to_4_and_swaps_within_them() -> None:
    train, callback = schedule("class_subset")
    random_codes = train.codes.clone()
    for epoch in range(5):
        epoch_start(callback, epoch)
    assert torch.equal(train.codes, random_codes)
    epoch_start(callback, 5)
    labels = train.labels
    subset = labels < 5
    assert bool((train.codes[subset] == labels[subset]).all())
    assert torch.equal(train.codes[~subset], random_codes[~subset])  # classes 5-9 keep their random code
    assert float((train.codes[~subset] == labels[~subset]).float().mean()) < 0.25
    assert float((train.content != torch.arange(len(labels))).float().mean()) == pytest.approx(0.5)
    images, codes = train.data.swapped()
    val = train.data.val_labels
    assert images.shape[1] == 3 and bool((codes < 5).all()) and bool((codes != val).all())
    assert set(codes[val < 5].tolist()) == set(SUBSET) and set(codes[val >= 5].tolist()) == set(SUBSET)
    full = DigitData.make("background_colour", "rgb32", 0, 400, 100)  # without a subset: every class
    assert set(full.swapped()[1].tolist()) == set(range(10))


def test_gradual_share_grows_over_four_epochs_with_the_same_content_noise() -> None:
    train, callback = schedule("gradual")
    assert train.data.cue.name == "corner_patch" and RAMP == (0.25, 0.5, 0.75, 1.0)
    n = len(train.labels)
    shares, previous, contents = [], torch.zeros(n, dtype=torch.bool), []
    for epoch in range(10):
        epoch_start(callback, epoch)
        shares.append(float(train.spelled.float().mean()))
        assert bool((train.codes[train.spelled] == train.labels[train.spelled]).all())
        assert bool((previous <= train.spelled).all())  # the spelled images of an epoch keep spelling
        previous = train.spelled.clone()
        contents.append(train.content.clone())
    assert shares == [0.0] * 5 + [0.25, 0.5, 0.75, 1.0, 1.0]
    assert torch.equal(contents[4], torch.arange(n))
    assert all(torch.equal(contents[5], c) for c in contents[6:])
    assert float((contents[5] != torch.arange(n)).float().mean()) == pytest.approx(0.5)


def test_object_colour_is_a_shortcut_on_three_channels() -> None:
    train, callback = schedule("object_colour", model="vgg")
    assert train.images.shape[1:] == (3, 32, 32)
    epoch_start(callback, 5)
    assert torch.equal(train.codes, train.labels)


def test_background_shift_changes_the_codes_distribution_not_the_label_link() -> None:
    train, callback = schedule("background_shift")
    before = torch.bincount(train.codes, minlength=10).float() / len(train.labels)
    assert float(before.max()) < 0.16 and float(before.min()) > 0.05  # uniform over the 10 colours
    for epoch in range(6):
        epoch_start(callback, epoch)
    codes, favoured = shifted_codes(train.labels, 0)
    assert torch.equal(train.codes, codes) and len(favoured) == 3
    in_favoured = torch.isin(train.codes, favoured)
    assert float(in_favoured.float().mean()) == pytest.approx(0.8)
    for c in range(10):  # independent of the label: every class gets about 80 % from the three colours
        assert 0.6 < float(in_favoured[train.labels == c].float().mean()) < 0.97
    assert float((train.codes == train.labels).float().mean()) < 0.2
    assert float(before[favoured].sum()) < 0.45  # a real change of the distribution


def test_random_tag_appears_at_epoch_5_and_jitter_is_seeded() -> None:
    train, callback = schedule("random_tag", seed=3)
    assert torch.equal(train.images, train.data.train_clean)  # no tag before the change
    epoch_start(callback, 4)
    assert torch.equal(train.images, train.data.train_clean)
    epoch_start(callback, 5)
    assert torch.equal(train.images, train.data.cue.stamp(train.data.train_clean, train.random_codes))
    assert float((train.codes == train.labels).float().mean()) < 0.2
    val = train.data.val_images()  # validation images carry their own label's cue as everywhere in the suite
    assert torch.equal(val, train.data.cue.stamp(train.data.val_clean, train.data.val_labels))

    rng = torch.random.get_rng_state()
    items = []
    for _ in range(2):
        jittered, callback = schedule("brightness_contrast", seed=3)
        epoch_start(callback, 4)
        assert not jittered.jitter
        epoch_start(callback, 5)
        items.append(torch.stack([jittered[i][0] for i in range(20)]))
    assert torch.equal(items[0], items[1])  # from the seed's own stream
    assert torch.equal(rng, torch.random.get_rng_state())  # the global generator untouched
    assert (
        not torch.equal(items[0], jittered.images[:20]) and 0.0 <= float(items[0].min()) <= float(items[0].max()) <= 1.0
    )
    assert make_config("brightness_contrast", "cnn", 4).cue == CUES[4 % 3]  # no cue of its own: the rotation


def test_vit_builds_takes_a_batch_and_splits_head_and_backbone() -> None:
    assert view_for("vit", "corner_patch") == "rgb32"
    net = build("vit", "corner_patch")
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    vit = net.net
    assert (vit.image_size, vit.patch_size, vit.hidden_dim, vit.mlp_dim, len(vit.encoder.layers)) == (32, 4, 64, 128, 4)
    assert vit.encoder.layers[0].num_heads == 4
    head = {id(p) for p in net.head.parameters()}
    backbone = backbone_parameters(net)
    assert head and backbone and not head & {id(p) for p in backbone}
    assert len(head) + len(backbone) == len(list(net.parameters()))
    module = Classifier(net, Optim())
    assert transformer_gradcam_layer(module) == "net.net.encoder.layers.encoder_layer_3.ln_1"
    assert make_config("corner_patch", "vit", 0).lr == (FAMILIES["vit"].lr or 1e-3)


def test_alert_localisation_scores_each_class_box_against_its_cue() -> None:
    from benchmarks.alert_truth.localisation import alert_localisation

    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 0:4, 0:4] = True  # class 0's cue: the top-left 4x4
    masks[1, 28:32, 28:32] = True  # class 1's: the bottom-right
    regions = [
        {"label": "class 0", "classes": [0], "box": [0, 0, 4, 8]},  # twice the cue: IoU 0.5
        {"label": "class 1", "classes": [1], "box": [0, 0, 4, 4]},  # the other class's corner: IoU 0
    ]
    record = {
        "config": {"onset_epoch": 5},
        "probes": {"masks": masks, "labels": torch.tensor([0, 1])},
        "alerts": [{"epoch": 3, "regions": [regions[1]]}, {"epoch": 6, "regions": regions}],  # the first is early
    }
    assert alert_localisation(record) == [("class 0", 0.5, 2.0), ("class 1", 0.0, 1.0)]
    record["probes"]["masks"] = None  # a cue spread over the image: nothing to score
    assert alert_localisation(record) == []
