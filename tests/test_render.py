"""Tests for lightning_xai.visualize.render (rendering in torch), against matplotlib, numpy and torchvision."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from lightning_xai.visualize.render import (
    COLORMAPS,
    apply_colormap,
    check_colormap,
    device_lut,
    lut_uint8,
    make_grid,
    normalize_maps,
    overlay,
    render_heatmap_grid,
    render_overlay_grid,
    to_display_images,
    to_uint8,
)


def matplotlib_lut_uint8(name: str) -> np.ndarray:
    """matplotlib's 256-entry LUT quantised to uint8, shape (256, 3)."""
    rgb = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    return np.round(rgb * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- colormaps


@pytest.mark.parametrize("name", [*COLORMAPS, "magma", "RdBu"])
def test_lut_is_matplotlibs_table(name: str) -> None:
    lut = device_lut(name, "cpu")
    assert lut.shape == (256, 3) and lut.dtype == torch.float32
    reference = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    np.testing.assert_allclose(lut.double().numpy(), reference, atol=1e-7)
    np.testing.assert_array_equal(lut_uint8(name), matplotlib_lut_uint8(name))
    with pytest.raises(ValueError):
        lut_uint8(name)[0, 0] = 1  # shared: read-only


@pytest.mark.parametrize("name", COLORMAPS)
def test_apply_colormap_matches_matplotlib_on_ramp(name: str) -> None:
    # a fine ramp plus every exact LUT level k/255
    v = torch.cat([torch.linspace(0, 1, 1001), torch.arange(256) / 255.0, torch.tensor([0.25, 0.5, 1.0])])
    maps = v.reshape(1, 28, 45)
    rgb = apply_colormap(maps, name)
    assert rgb.shape == (1, 3, 28, 45) and rgb.dtype == torch.float32
    # matplotlib on the same 256-level quantisation of the input (index = round(v * 255), computed in
    # float32 like the float32 input, so that ties such as 76.5 round identically)
    q = np.round(maps.numpy().reshape(-1) * np.float32(255)).astype(np.float64) / 255
    ref = matplotlib.colormaps[name](q)[:, :3]
    ours = rgb[0].reshape(3, -1).T.double().numpy()
    assert np.abs(ours - ref).max() <= 1e-6
    # and the raw (unquantised) input lands within one LUT step of matplotlib too
    ref_raw = matplotlib.colormaps[name](maps.numpy().reshape(-1).astype(np.float64))[:, :3]
    assert np.abs(ours - ref_raw).max() <= 0.1


def test_apply_colormap_clamps_and_accepts_channel_dim() -> None:
    maps = torch.tensor([[[-3.0, 0.0], [1.0, 7.0]]])
    rgb = apply_colormap(maps, "viridis")
    lut = device_lut("viridis", "cpu")
    assert torch.equal(rgb[0, :, 0, 0], lut[0]) and torch.equal(rgb[0, :, 1, 1], lut[255])
    assert torch.equal(apply_colormap(maps.unsqueeze(1), "viridis"), rgb)
    nan = apply_colormap(torch.tensor([[[float("nan")]]]), "jet")
    assert torch.equal(nan[0, :, 0, 0], device_lut("jet", "cpu")[0])


def test_bad_colormap_name_message() -> None:
    with pytest.raises(ValueError, match=r"colormap='nope'.*matplotlib.colormaps.*jet, viridis, inferno, turbo"):
        check_colormap("nope")
    with pytest.raises(ValueError, match="colormap='hotter'"):
        apply_colormap(torch.zeros(1, 2, 2), "hotter")
    with pytest.raises(ValueError, match="colormap"):
        render_overlay_grid(torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4), colormap="magmaa")
    with pytest.raises(ValueError, match="colormap=3"):
        render_heatmap_grid(torch.rand(1, 4, 4), colormap=3)  # type: ignore[arg-type]


def test_colormap_names_are_case_insensitive_where_unambiguous() -> None:
    assert check_colormap("JET") == "jet" and torch.equal(device_lut("JET", "cpu"), device_lut("jet", "cpu"))
    assert torch.equal(device_lut("rdbu", "cpu"), device_lut("RdBu", "cpu"))


# --------------------------------------------------------------------------------------------- normalize


def test_normalize_max_exact_and_abs() -> None:
    m = torch.tensor([[[-2.0, 1.0], [0.0, 4.0]], [[0.5, -0.25], [0.0, 0.0]]])
    out = normalize_maps(m)
    expected = torch.tensor([[[0.5, 0.25], [0.0, 1.0]], [[1.0, 0.5], [0.0, 0.0]]])
    assert out.shape == (2, 2, 2)
    assert torch.equal(out, expected)


def test_normalize_all_zero_is_zero_not_nan() -> None:
    m = torch.zeros(3, 5, 5)
    m[1, 2, 2] = 3.0
    for mode in ("max", "percentile"):
        out = normalize_maps(m, mode=mode)
        assert not torch.isnan(out).any()
        assert torch.equal(out[0], torch.zeros(5, 5)) and torch.equal(out[2], torch.zeros(5, 5))
        # sparse map whose 99th percentile is 0 falls back to the max (no blow-up to all ones)
        assert float(out[1, 2, 2]) == 1.0 and float(out[1].sum()) == 1.0


def test_normalize_percentile_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 9, 11, generator=g, dtype=torch.float64) ** 3
    for q in (99.0, 90.0, 50.0, 100.0, 37.3):
        out = normalize_maps(m, mode="percentile", percentile=q)
        a = np.abs(m.numpy()).reshape(4, -1)
        p = np.percentile(a, q, axis=1, method="linear")
        ref = np.clip(a / p[:, None], 0, 1).reshape(4, 9, 11)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
        assert float(out.max()) == 1.0


def test_normalize_percentile_hand_made() -> None:
    # |A| = 0..9 -> 50th percentile (linear) = 4.5
    m = -torch.arange(10, dtype=torch.float32).reshape(1, 2, 5)
    out = normalize_maps(m, mode="percentile", percentile=50.0)
    expected = (torch.arange(10, dtype=torch.float32) / 4.5).clamp(max=1.0).reshape(1, 2, 5)
    assert torch.allclose(out, expected, atol=0, rtol=1e-6)
    assert torch.equal(normalize_maps(m, mode="percentile", percentile=100.0), normalize_maps(m))


def test_normalize_channel_sum_and_squeeze() -> None:
    m = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.0]], [[0.0, 1.0]]]])  # (1, 3, 1, 2): sum |A| = 4, 3
    out = normalize_maps(m)
    assert out.shape == (1, 1, 2)
    assert torch.equal(out, torch.tensor([[[1.0, 0.75]]]))
    single = torch.tensor([[[[0.0, -1.0], [2.0, 4.0]]]])  # (1, 1, 2, 2)
    assert torch.equal(normalize_maps(single), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))


def test_normalize_errors_and_nonfinite() -> None:
    with pytest.raises(ValueError, match="mode='median'"):
        normalize_maps(torch.rand(1, 2, 2), mode="median")
    with pytest.raises(ValueError, match="percentile"):
        normalize_maps(torch.rand(1, 2, 2), mode="percentile", percentile=0.0)
    with pytest.raises(ValueError, match="shape"):
        normalize_maps(torch.rand(2, 2))
    m = torch.tensor([[[float("nan"), 2.0], [float("inf"), 1.0]]])
    assert torch.equal(normalize_maps(m), torch.tensor([[[0.0, 1.0], [0.0, 0.5]]]))


# --------------------------------------------------------------------------------------------- display


def test_display_mean_std() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = torch.rand(2, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    normed = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = to_display_images(normed, denormalize=(mean, std))
    assert out.shape == (2, 3, 5, 4)
    assert torch.allclose(out, raw, atol=1e-6)
    # out-of-range after denormalisation is clamped, not rescaled
    out2 = to_display_images(torch.full((1, 3, 2, 2), 10.0), denormalize=([0.0], [1.0]))
    assert torch.equal(out2, torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="2 values but the images have 3 channels"):
        to_display_images(normed, denormalize=([0.5, 0.5], [0.2, 0.2]))


def test_display_callable() -> None:
    x = torch.full((1, 3, 2, 2), 0.2)
    out = to_display_images(x, denormalize=lambda t: t * 2 + 0.1)
    assert torch.allclose(out, torch.full((1, 3, 2, 2), 0.5))
    # callable may reduce e.g. 4 channels to 3
    out4 = to_display_images(torch.rand(2, 4, 3, 3), denormalize=lambda t: t[:, :3])
    assert out4.shape == (2, 3, 3, 3)


def test_display_grayscale_to_rgb() -> None:
    x = torch.rand(2, 1, 4, 4)
    out = to_display_images(x)
    assert out.shape == (2, 3, 4, 4)
    for c in range(3):
        assert torch.equal(out[:, c], x[:, 0])


def test_display_out_of_range_minmax_per_image() -> None:
    x = torch.stack(
        [
            torch.tensor([[-1.0, 0.0], [1.0, 3.0]]).expand(3, 2, 2),
            torch.tensor([[0.2, 0.4], [0.6, 0.7]]).expand(3, 2, 2),
            torch.full((3, 2, 2), 5.0),
        ]
    )
    out = to_display_images(x)
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.allclose(out[1, 0], torch.tensor([[0.0, 0.4], [0.8, 1.0]]))  # scaled independently
    assert torch.equal(out[2], torch.full((3, 2, 2), 0.5))  # constant image -> grey
    # in range: untouched
    y = torch.rand(2, 3, 4, 4)
    assert torch.equal(to_display_images(y), y)


def test_display_bad_channels() -> None:
    with pytest.raises(ValueError, match="4 channels.*1 \\(grayscale\\) or 3 \\(RGB\\)"):
        to_display_images(torch.rand(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        to_display_images(torch.rand(3, 2, 2))


# --------------------------------------------------------------------------------------------- overlay


def test_overlay_zero_heat_is_image_exactly() -> None:
    img = torch.rand(2, 3, 6, 5)
    heat = torch.zeros(2, 6, 5)
    rgb = torch.rand(2, 3, 6, 5)
    for alpha in (0.0, 0.3, 1.0):
        assert torch.equal(overlay(img, rgb, heat, alpha=alpha), img)


def test_overlay_full_heat_alpha_one_is_colour_exactly() -> None:
    img = torch.rand(2, 3, 6, 5)
    heat = torch.ones(2, 6, 5)
    rgb = apply_colormap(torch.rand(2, 6, 5), "turbo")
    assert torch.equal(overlay(img, rgb, heat, alpha=1.0), rgb)
    half = overlay(img, rgb, heat * 0.5, alpha=0.5)
    assert torch.allclose(half, img * 0.75 + rgb * 0.25)


def test_overlay_shape_mismatch() -> None:
    img = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="upsample"):
        overlay(img, torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="upsample"):
        overlay(img, torch.rand(1, 3, 8, 8), torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), alpha=1.5)


# --------------------------------------------------------------------------------------------- grid


@pytest.mark.parametrize("n", [1, 5, 8, 11])
@pytest.mark.parametrize("nrow", [3, 8])
def test_make_grid_equals_torchvision(n: int, nrow: int) -> None:
    tv_utils = pytest.importorskip("torchvision.utils")
    x = torch.rand(n, 3, 5, 7, generator=torch.Generator().manual_seed(n * 10 + nrow))
    ours = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    assert ours.shape == (3, rows * 7 + 2, ncol * 9 + 2)
    if n > 1:
        ref = tv_utils.make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
        assert torch.equal(ours, ref)
    else:
        # torchvision returns a lone image unpadded; ours keeps the border. Compare the padded layout
        # with torchvision's two-image column, whose first cell is exactly a one-image grid.
        ref = tv_utils.make_grid(torch.cat([x, x]), nrow=1, padding=2, pad_value=1.0)
        assert torch.equal(ours, ref[:, : 5 + 4, :])
    # single channel stays single channel and matches torchvision's (replicated) channel 0
    g = make_grid(x[:, :1], nrow=nrow)
    assert g.shape[0] == 1 and torch.equal(g[0], ours[0])


def test_make_grid_dtype_and_errors() -> None:
    x = torch.randint(0, 255, (3, 3, 4, 4), dtype=torch.uint8)
    g = make_grid(x, nrow=2, padding=1, pad_value=255)
    assert g.dtype == torch.uint8 and g.shape == (3, 11, 11)
    assert torch.equal(g[:, 1:5, 6:10], x[1]) and torch.equal(g[:, 6:10, 6:10], torch.full((3, 4, 4), 255))
    assert make_grid(x, nrow=2, padding=0).shape == (3, 8, 8)
    with pytest.raises(ValueError):
        make_grid(x[:0])
    with pytest.raises(ValueError):
        make_grid(x, nrow=0)


def test_to_uint8() -> None:
    t = torch.tensor([-1.0, 0.0, 0.2, 0.5, 1.0, 3.0, float("nan")])
    out = to_uint8(t)
    assert out.dtype == torch.uint8
    assert out.tolist() == [0, 0, 51, 128, 255, 255, 0]


# --------------------------------------------------------------------------------------------- pipelines


def test_render_overlay_grid_upsamples() -> None:
    images = torch.randn(5, 3, 16, 12)
    maps = torch.rand(5, 4, 3)
    grid = render_overlay_grid(images, maps, nrow=3, alpha=0.6, colormap="inferno")
    assert grid.dtype == torch.uint8
    assert grid.shape == (3, 2 * 18 + 2, 3 * 14 + 2)
    assert grid.device == images.device
    # padding is white, the empty sixth cell too
    assert int(grid[:, :2].min()) == 255 and int(grid[:, 20:, 30:].min()) == 255
    # same-size maps with channels, percentile normalisation and denormalize also work
    g2 = render_overlay_grid(
        images, torch.randn(5, 3, 16, 12), normalization="percentile", denormalize=([0.5] * 3, [0.2] * 3)
    )
    assert g2.shape == (3, 18 + 2, 5 * 14 + 2) and g2.dtype == torch.uint8


def test_render_overlay_grid_zero_maps_shows_image() -> None:
    images = torch.rand(2, 1, 6, 6)
    grid = render_overlay_grid(images, torch.zeros(2, 3, 3), nrow=2)
    expected = to_uint8(make_grid(to_display_images(images), nrow=2))
    assert torch.equal(grid, expected)


def test_render_overlay_grid_batch_mismatch() -> None:
    with pytest.raises(ValueError, match="entries"):
        render_overlay_grid(torch.rand(2, 3, 4, 4), torch.rand(3, 4, 4))


def test_render_heatmap_grid() -> None:
    maps = torch.rand(4, 7, 7)
    grid = render_heatmap_grid(maps, colormap="viridis", nrow=2)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 * 9 + 2, 2 * 9 + 2)
    expected = to_uint8(make_grid(apply_colormap(normalize_maps(maps), "viridis"), nrow=2))
    assert torch.equal(grid, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_stays_on_cuda() -> None:
    images = torch.rand(3, 3, 16, 16, device="cuda")
    maps = torch.rand(3, 4, 4, device="cuda")
    grid = render_overlay_grid(images, maps, normalization="percentile")
    assert grid.is_cuda and grid.dtype == torch.uint8
    cpu = render_overlay_grid(images.cpu(), maps.cpu(), normalization="percentile")
    assert (grid.cpu().int() - cpu.int()).abs().max() <= 1
    assert render_heatmap_grid(maps).is_cuda


def test_one_torch_thread_for_the_pictures_and_restored_after() -> None:
    from lightning_xai.explain.threads import one_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_torch_thread("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_torch_thread():
            raise RuntimeError("a failure inside")
        assert torch.get_num_threads() == 2
        with one_torch_thread("meta"):  # not the CPU: nothing changes
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
