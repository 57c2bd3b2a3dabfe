"""The monitor's internal helpers, on plain values (these were docstring examples before issue 19's second
compression round): RNG isolation, probe shards, the ``ddp_spawn`` return file, the state key's parts, the flat
settings text and the drift-key placeholders."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_xai import Budget, DriftPolicy, GradCam
from lightning_xai._distributed import mark_spawn_return, receive_spawn_return, send_spawn_return, shard
from lightning_xai._rng import isolated_rng
from lightning_xai._trainer import with_placeholders
from lightning_xai.settings import digest, normalize_arguments, run_settings, state_key_parts


def draw() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def seed_all() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def test_isolated_rng_leaves_torch_numpy_and_python_streams_where_they_were() -> None:
    seed_all()
    expected = draw()
    seed_all()
    with isolated_rng():
        draw()
    assert draw() == expected


def test_shards_are_consecutive_cover_every_probe_and_differ_by_at_most_one() -> None:
    assert [shard(5, 2, r) for r in range(2)] == [slice(0, 3), slice(3, 5)]
    for count, world in ((0, 2), (3, 4), (7, 3), (8, 4)):
        parts = [shard(count, world, r) for r in range(world)]
        assert [i for p in parts for i in range(count)[p]] == list(range(count))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_the_spawn_return_travels_once_from_another_process_only(tmp_path: Path) -> None:
    state: dict = {}
    mark_spawn_return(state)
    path, pid = state["_spawn_return"]
    assert pid == os.getpid() and not os.path.exists(path)
    mark_spawn_return(state)
    assert state["_spawn_return"] == (path, pid)  # named once per monitor
    send_spawn_return((path, pid), lambda: {"x": 1}, rank_zero=True)
    assert not os.path.exists(path)  # the main process itself writes nothing
    other = (str(tmp_path / "r.pt"), os.getpid() + 1)
    send_spawn_return(other, lambda: {"x": 1}, rank_zero=False)
    assert not os.path.exists(other[0])  # only rank 0 sends
    send_spawn_return(other, lambda: {"x": 1}, rank_zero=True)  # a worker: another pid than the waiting one
    assert receive_spawn_return(other) is None  # read only in the process that waits for it
    mine = (other[0], os.getpid())
    assert receive_spawn_return(mine) == {"x": 1} and not os.path.exists(other[0])
    assert receive_spawn_return(mine) is None and receive_spawn_return(None) is None


def arguments(**given: object) -> dict:
    defaults = dict(probes=None, num_probes=8, methods=("gradcam",), target="label", every_n_epochs=1)
    defaults |= dict(denormalize=None, forward_fn=None, drift=None, display=None, budget=None, seed=0, name=None)
    return normalize_arguments({**defaults, **given})


def test_state_key_parts_name_methods_probe_source_and_target() -> None:
    parts = state_key_parts(arguments(methods=[GradCam(layer="features")]))
    assert parts == {"methods": ["gradcam(layer=features,reshape=None)"], "probes": "val[8,seed=0]", "target": "label"}
    images, labels = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    given = state_key_parts(arguments(probes=(images, labels), target=torch.tensor([1, 1, 0, 0]), seed=3))
    assert given["probes"] == f"{digest(images)}+{digest(labels)}[8,seed=3]"
    assert given["target"] == digest(torch.tensor([1, 1, 0, 0])) != digest(torch.tensor([1, 1, 0, 1]))
    assert digest(torch.zeros(2, 3)) == "(2, 3):d3399b72" == digest(np.zeros((2, 3), dtype=np.float32))


def test_run_settings_is_flat_and_primitive() -> None:
    groups = [DriftPolicy(warmup_epochs=1), Budget()]
    s = run_settings([GradCam()], None, groups, name="val", target="label", every_n_epochs=1, num_probes=8)
    assert list(s)[:5] == ["name", "methods", "target", "every_n_epochs", "num_probes"]
    assert (s["name"], s["target"], s["every_n_epochs"], s["num_probes"]) == ("val", "label", 1, 8)
    assert s["methods"]["gradcam"]["layer"] == "automatic (chosen at setup)"
    assert (s["warmup_epochs"], s["detector"]["cells"], s["max_overhead"], s["rules"]) == (1, 8, None, ())


def test_placeholders_only_for_methods_that_ran_and_keys_not_measured() -> None:
    keys = ["xai/g/drift/rank_vs_previous/median", "xai/ig/drift/rank_vs_previous/median"]
    key = keys[0]
    out = with_placeholders({"xai/g/confidence_mean": 0.5}, keys, [], {})  # ig failed: no placeholder
    assert out == {key: 0.0, "xai/g/confidence_mean": 0.5}
    measured = {"xai/g/confidence_mean": 0.5, key: 0.3}
    assert with_placeholders(measured, keys, [], {}) == measured
    # measured once, then not (the budget cut the method's drift): not 0.0; nothing while callback_metrics holds the
    # key, its last value when it does not (a resumed run, a new Trainer), named as the monitor logs it
    later = {"xai/g/confidence_mean": 0.5}
    assert with_placeholders(later, keys, [measured, later], {key: 0.3}) == later
    assert with_placeholders(later, keys, [measured], {}, None) == {key: 0.3, **later}
    assert with_placeholders(later, keys, [measured], {"xai/run/g/drift/rank_vs_previous/median": 0.3}, "run") == later


class _DropsItsLambda:
    """Picklable: its __getstate__ leaves the lambda out (rebuilt on load)."""

    def __init__(self) -> None:
        self.fn = lambda alert: alert

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fn = lambda alert: alert


class _HoldsALambda:
    def __init__(self) -> None:
        self.fn = lambda alert: alert


def test_the_spawn_check_finds_what_pickle_cannot_send_by_name_and_nothing_else() -> None:
    """``_by_name`` lists what pickle stores by name; every listed item must pickle, or the check names the argument.
    What pickles fine (a __getstate__ dropping a lambda, numpy functions, cached functions, tensors) lists nothing
    that fails; a lambda one attribute down, or an object of a local class, is found."""
    import functools
    import pickle

    import numpy as np

    from lightning_xai._distributed import _by_name

    def fails(value: Any) -> list[Any]:
        out = []
        for part in _by_name(value, 0, set()):
            try:
                pickle.dumps(part)
            except Exception:  # noqa: BLE001 - what the check would refuse
                out.append(part)
        return out

    class Local:
        pass

    cached = functools.lru_cache(maxsize=None)(np.abs)
    for fine in (_DropsItsLambda(), np.mean, functools.partial(np.clip, a_min=0), cached, torch.zeros(3), [np.sum]):
        assert fails(fine) == [], fine
    assert len(fails(_HoldsALambda())) == 1 and len(fails(Local())) == 1
    assert len(fails({"deep": [functools.partial(lambda x: x, 1)]})) == 1
