"""The explain layer's internal helpers, checked exactly (these were docstring examples): the argument checks, the
guard's attribute restore, the forward wrapper, IG's batch plan and step rungs, the evaluation's plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.explain.base import check_float, check_int, check_name, suggest_name


def test_check_int_accepts_numpy_and_whole_floats_and_names_the_fix() -> None:
    assert check_int("warmup_epochs", np.int64(2)) == 2 and check_int("num_probes", 8.0, 1) == 8
    fix = "pass a whole number: num_probes=2 or num_probes=3."
    with pytest.raises(ValueError, match=f"^`num_probes` must be an int >= 1, got 2.5; {fix}$"):
        check_int("num_probes", 2.5, 1)


def test_check_float_accepts_numpy_and_refuses_strings_with_the_number_they_hold() -> None:
    assert check_float("topk", np.float32(0.25), 0, 1, low_open=True) == 0.25
    with pytest.raises(ValueError, match=r"^`topk` must be a number in \(0, 1\], got '0.1' \(str\); pass topk=0.1.$"):
        check_float("topk", "0.1", 0, 1, low_open=True)


def test_names_that_become_tags_are_checked_and_a_fixed_one_suggested() -> None:
    with pytest.raises(ValueError, match=r"got 'grad cam/v2' \(str\)\. Use e\.g\. 'grad_cam_v2'\.$"):
        check_name("name", "grad cam/v2")
    assert (suggest_name("grad cam/v2"), suggest_name(".."), suggest_name(3)) == ("grad_cam_v2", "method", "3")


def test_restore_attributes_puts_back_what_a_method_deleted_and_drops_what_it_added() -> None:
    from lightning_xai.explain.guard import restore_attributes, snapshot_attributes

    net = nn.Linear(1, 1)
    net.rule = "mine"
    saved = snapshot_attributes(net)
    del net.rule  # as LRP does
    net.activations, net.training = {}, False
    restore_attributes(saved)
    assert (net.rule, hasattr(net, "activations"), net.training) == ("mine", False, True)


def test_the_guard_leaves_modes_and_grads_as_found() -> None:
    from lightning_xai.explain.guard import training_state_guard

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    running = net[1].running_mean.clone()
    with torch.inference_mode(), training_state_guard(net):
        x = torch.ones(3, 2, requires_grad=True)
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        assert not net.training and grad.shape == (3, 2)
    assert net.training and net[0].weight.grad is None and torch.equal(net[1].running_mean, running)


def test_model_forward_explains_half_precision_weights_in_float32_and_leaves_them() -> None:
    from lightning_xai.explain.forward import model_forward

    net = nn.Linear(3, 2).to(torch.bfloat16)
    with model_forward(net) as forward:
        out = forward(torch.ones(1, 3))
    assert out.dtype == torch.float32 and net.weight.dtype == torch.bfloat16
    expected = torch.ones(1, 3) @ net.weight.float().T + net.bias.float()
    torch.testing.assert_close(out, expected)
    with model_forward(net, lambda module, x: {"logits": module(x)}) as forward, pytest.raises(TypeError, match="dict"):
        forward(torch.ones(1, 3))


def test_a_malformed_explanation_is_described() -> None:
    from lightning_xai.explain import Explanation
    from lightning_xai.explain.run import explanation_problem

    bad = Explanation(torch.zeros(2, 3), torch.zeros(2, 4, 4))
    expected = "raw has shape (2, 3); expected (P, h, w) = (2, h, w) float maps"
    assert explanation_problem(bad, torch.zeros(2, 1, 4, 4)) == expected
    assert explanation_problem(Explanation(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)), torch.zeros(2, 1, 4, 4)) == ""


def test_isolated_returns_none_and_records_the_failure() -> None:
    from lightning_xai.explain.run import isolated

    errors: list[str] = []
    assert isolated("rendering", errors, lambda key, message: None, divmod, 1, 0) is None
    assert errors == ["rendering failed: ZeroDivisionError: integer division or modulo by zero"]
    assert isolated("rendering", errors, lambda key, message: None, divmod, 7, 2) == (3, 1)


def test_shards_merge_into_the_whole_evaluation() -> None:
    from lightning_xai.explain import IntegratedGradients
    from lightning_xai.explain.run import explain_probes, merge_shards

    model, x, y = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.rand(4, 1, 2, 2), torch.tensor([0, 2, 1, 0])
    whole = explain_probes(model, x, y, [IntegratedGradients(4)])
    parts = [explain_probes(model, x[i : i + 2], y[i : i + 2], [IntegratedGradients(4)]) for i in (0, 2)]
    merged = merge_shards(parts, torch.device("cpu"))
    assert sorted(merged.results) == ["integrated_gradients"] and merged.errors == []
    torch.testing.assert_close(merged.results["integrated_gradients"].raw, whole.results["integrated_gradients"].raw)
    assert torch.equal(merged.targets, y) and merged.seconds == max(p.seconds for p in parts)


def test_ig_baseline_step_rungs_and_batch_plan() -> None:
    from lightning_xai.explain.base import check_baseline
    from lightning_xai.explain.integrated_gradients import fewer_steps, plan_batches

    per_channel = check_baseline([-2.5, -2.0, -1.5], "IntegratedGradients")
    assert isinstance(per_channel, torch.Tensor) and tuple(per_channel.shape) == (3, 1, 1)
    assert check_baseline(np.float64(0.5), "X") == 0.5 and check_baseline(None, "X") is None
    for bad in (float("nan"), "black", [1.0, float("inf")], [[["a"]]]):
        with pytest.raises(ValueError, match=r"`X\(baseline=\.\.\.\)` must be"):
            check_baseline(bad, "X")
    assert (fewer_steps(32), fewer_steps(24, 0.3), fewer_steps(8), fewer_steps(24, floor=16)) == (24, 8, None, 16)
    assert (fewer_steps(48, 0.75), fewer_steps(32, 0.99), fewer_steps(24, 0.01)) == (32, 24, 8)
    assert plan_batches(8, 32, 64) == [(8, 64)]  # 8 steps of 8 probes per pass
    assert plan_batches(4, 12, 32) == [(4, 24)]  # 12 steps in two even passes of 6, not 8 + 4
    assert plan_batches(10, 3, 4) == [(4, 4), (3, 3), (3, 3)]  # more probes than the cap: even slices
