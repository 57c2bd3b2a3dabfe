"""Distributed training: refuse strategies that shard the model, give each rank its share of the probes, take
decisions on every rank together through the strategy's ``broadcast``/``reduce`` (:func:`any_rank`), and bring a
``ddp_spawn`` fit's results back to the caller of ``fit`` (Lightning returns only the weights and
``callback_metrics``): rank 0 writes the monitor's state to a file named when the monitor was pickled."""

from __future__ import annotations

import copyreg
import functools
import os
import pickle
import reprlib
import tempfile
import time
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from lightning.pytorch import Callback, Trainer

from lightning_xai.explain.run import ProbeExplanations, merge_shards, say_notes, to_cpu

T = TypeVar("T")

#: strategies whose parameters are sharded across ranks: no rank holds the whole model to explain
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def check_strategy(strategy: Any) -> None:
    """Refuse, at setup, strategies whose parameters are sharded across ranks: every forward there is a collective
    of all ranks, which the per-rank probe shares (of different sizes) would not keep in step."""
    names = {cls.__name__ for cls in type(strategy).__mro__}
    if (sharded := next((n for n in SHARDED_STRATEGIES if n in names), None)) is not None:
        raise ValueError(
            f"AttributionMonitor does not support `strategy={type(strategy).__name__}`: {sharded} shards the "
            "parameters across ranks, so no single rank holds the whole model that Captum must run forward and "
            "backward through, and each forward needs every rank. Train with `strategy='ddp'` (or "
            "'ddp_spawn'/single device) to monitor, or explain saved checkpoints after training."
        )


def shard(count: int, world: int, rank: int) -> slice:
    """This rank's consecutive share of ``count`` probes (sizes within one of each other)."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def explain_shards(
    trainer: Trainer,
    count: int,
    explain: Callable[[slice], ProbeExplanations],
    device: torch.device,
    warn_once: Callable[[str, str], None] | None = None,
) -> Callable[[], ProbeExplanations]:
    """Every rank explains its :func:`shard` of the ``count`` probes; the shares travel to every rank through the
    strategy's ``broadcast`` (CPU tensors). When ``explain`` raises on any rank, every rank raises. Returns what
    merges them in probe order and says the other ranks' warnings with ``warn_once`` (call it inside
    :func:`on_rank_zero`)."""
    if trainer.world_size == 1:
        done = explain(slice(0, count))
        return lambda: done
    started = time.perf_counter()
    mine = shard(count, trainer.world_size, trainer.global_rank)
    part, failure = _attempt(lambda: to_cpu(explain(mine))) if mine.stop > mine.start else (None, None)
    parts = [trainer.strategy.broadcast(part, src=r) for r in range(trainer.world_size)]
    _raise_failures(failure, dict(enumerate(parts)))

    def gather() -> ProbeExplanations:
        if warn_once is not None:
            say_notes(parts, trainer.global_rank, warn_once)
        merged = merge_shards([p for p in parts if p is not None], device)
        merged.seconds = time.perf_counter() - started  # this rank's wall time, waiting for the slowest included
        return merged

    return gather


def on_rank_zero(trainer: Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result (or its failure, so that every rank raises) broadcast to every rank."""
    result: Any
    result, failure = _attempt(fn) if trainer.is_global_zero else (None, None)
    if trainer.world_size > 1:
        result = trainer.strategy.broadcast(result, src=0)
    _raise_failures(failure, {0: result})
    return result


#: the tensor of the last :func:`any_rank`, kept until the next one (see there)
_last_decision: list[torch.Tensor] = []


def any_rank(trainer: Trainer, flag: bool) -> bool:
    """Whether ``flag`` holds on any rank: a sum through the strategy's ``reduce`` (as ``reduce_boolean_decision``).

    The summed tensor is kept until the next call. With gloo, the process group's worker thread drops its reference to
    the tensor after ``all_reduce`` returns; when Python's reference is gone by then, that thread must take the GIL to
    free the tensor's Python object, and if the interpreter is already exiting (a decision just before a ``ddp_spawn``
    worker ends), the process aborts ("terminate called without an active exception"). A kept tensor is freed by
    Python, on the main thread."""
    decision = torch.tensor(int(flag), device=trainer.strategy.root_device)
    _last_decision[:] = [decision]
    return bool(trainer.strategy.reduce(decision, reduce_op="sum"))


def on_every_rank(trainer: Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; when it raises on any rank, every rank raises (the others a ``RuntimeError``)."""
    result, failure = _attempt(fn)
    if trainer.world_size > 1 and any_rank(trainer, failure is not None):
        if failure is None:
            raise RuntimeError("AttributionMonitor's setup check failed on another rank; see that rank's error.")
    _raise_failures(failure, {})
    return result


class _Failure(str):
    """A failure's text, sent to the other ranks in place of a result."""


def _attempt(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(fn(), None)``, or ``(_Failure, the exception)``: the failure travels in place of the result and the caller
    re-raises the exception once the other ranks were told (:func:`_raise_failures`)."""
    try:
        return fn(), None
    except BaseException as err:
        return _Failure(f"{type(err).__name__}: {err}"), err


def _raise_failures(own: BaseException | None, received: dict[int, Any]) -> None:
    """Re-raise this rank's own failure, else fail for the first rank whose result (``rank -> value``) is one."""
    if own is not None:
        raise own
    for rank, value in received.items():
        if isinstance(value, _Failure):
            raise RuntimeError(f"AttributionMonitor failed on rank {rank}, so every rank stops: {value}")


def return_target() -> tuple[str, int]:
    """A file name for rank 0 to send the results back to the caller of ``fit`` through, and the caller's process:
    named when the monitor is made, so that workers forked by ``ddp_notebook`` (which pickle nothing) have it too."""
    handle, path = tempfile.mkstemp(prefix="lightning_xai_", suffix=".pt")
    os.close(handle)
    os.remove(path)
    return path, os.getpid()


def mark_spawn_return(state: dict[str, Any]) -> None:
    """In ``__getstate__``: name the ddp_spawn return file and the process that waits for it, unless this process
    already waits for one (a monitor made in another process, e.g. a sweep's forked worker calling ``fit``, gets a
    file of its own: the results go to the process that launched the fit)."""
    target = state.get("_spawn_return")
    if target is None or target[1] != os.getpid():
        state["_spawn_return"] = return_target()


def check_spawn_arguments(arguments: Mapping[str, Any]) -> None:
    """In ``__getstate__``, while multiprocessing pickles for a process it spawns (``ddp_spawn``): a named error for an
    argument that holds (itself, or within a few attributes, items or fields) a function pickle cannot find by its
    name (a lambda, a function defined inside another) or an object of a class defined inside a function, before any
    training step, instead of multiprocessing's own. Only those functions and classes are pickled here, by reference
    (never a tensor or the model); other picklers (``copy.deepcopy``, cloudpickle) are left alone."""
    from multiprocessing import context

    if context.get_spawning_popen() is None:
        return
    shown = reprlib.Repr()
    shown.maxother = 160
    for argument, value in arguments.items():
        for part in _by_name(value, 0, set()):
            try:
                pickle.dumps(part)  # a function or class is pickled as its module and qualified name
            except Exception as err:  # noqa: BLE001 - any failure to pickle is the same error to the user
                raise pickle.PicklingError(
                    f"AttributionMonitor: `{argument}={shown.repr(value)}` cannot be sent to the processes a "
                    f"spawn-based strategy (`ddp_spawn`) starts, which pickle the callback ({type(err).__name__}: "
                    f"{err}). Define it as a module-level function or class (a `def` at the top of a module, not a "
                    "lambda or a function inside another), or use `strategy='ddp'`."
                ) from err


#: how deep :func:`_by_name` looks into attributes, items and fields (the settings objects, methods, callables)
_DEPTH = 4
_OPAQUE = (torch.Tensor, torch.nn.Module, Trainer, Callback, str, bytes, int, float, complex, bool, type(None), type)


def _by_name(value: Any, depth: int, seen: set[int]) -> list[Any]:
    """What pickle stores by name in ``value``: functions (a bound method's, a ``partial``'s), and the classes of
    objects pickled the default way; found in ``value`` and its attributes, items and fields up to :data:`_DEPTH`
    levels, never inside tensors or modules (the model)."""
    if depth > _DEPTH or id(value) in seen or isinstance(value, _OPAQUE):
        return []
    seen.add(id(value))
    if isinstance(value, types.FunctionType):
        return [value]
    if isinstance(value, types.MethodType):
        return _by_name(value.__func__, depth, seen) + _by_name(value.__self__, depth + 1, seen)
    if isinstance(value, functools.partial):
        children = [value.func, *value.args, *value.keywords.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    elif isinstance(value, dict):
        children = list(value.values())
    else:
        cls = type(value)
        if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
            return []  # pickled its own way: not looked into
        if cls in copyreg.dispatch_table:  # (copyreg.pickle registered its own way)
            return []
        own = [cls] if "<locals>" in cls.__qualname__ else []
        try:  # what pickle takes from it: its own __getstate__ (which may leave attributes out), else its __dict__
            custom = getattr(cls, "__getstate__", None)  # (object has one from Python 3.11 on)
            state = value.__getstate__() if custom not in (None, getattr(object, "__getstate__", None)) else vars(value)
        except Exception:  # noqa: BLE001 - no state to look into (slots, a failing __getstate__): pickle will tell
            return own
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        values = state.values() if isinstance(state, dict) else []
        return own + [p for child in values for p in _by_name(child, depth + 1, seen)]
    return [p for child in children for p in _by_name(child, depth + 1, seen)]


def send_spawn_return(target: tuple[str, int] | None, state: Callable[[], dict[str, Any]], rank_zero: bool) -> None:
    """At the end of a fit in a spawned worker (rank 0): write ``state()`` to ``target`` for the main process."""
    if target is not None and rank_zero and os.getpid() != target[1]:
        torch.save(state(), target[0])


def hand_back(monitor: Any, trainer: Trainer) -> None:
    """Before ``on_drift`` raises: write the pictures, flush the loggers and send the results to the caller of a
    ``ddp_spawn`` fit, which a spawned worker would lose (it ends with the exception, without Lightning's
    ``on_exception``/``teardown``, and a forked one without Python's exit handlers)."""
    monitor.media.flush()
    if trainer.is_global_zero:  # and the loggers' own buffers (TensorBoard's event queue): a worker ends unflushed
        for logger in trainer.loggers:
            logger.save()
    send_results(monitor, trainer)
    if trainer.world_size > 1:  # every rank raises: the first to end makes torch end the others, rank 0 included
        trainer.strategy.barrier()


def _launched_by_multiprocessing(trainer: Trainer) -> bool:
    """The ranks are processes Lightning spawned or forked from the caller's (``ddp_spawn``, ``ddp_notebook``)."""
    kinds = type(getattr(trainer.strategy, "launcher", None)).__mro__  # its subclasses too (XLA's launcher)
    return any(kind.__name__ == "_MultiProcessingLauncher" for kind in kinds)


def send_results(monitor: Any, trainer: Trainer) -> None:
    """In rank 0 of a ``ddp_spawn``/``ddp_notebook`` run: the monitor's state, for the caller
    (:func:`send_spawn_return`; not from processes the user started, e.g. a sweep's forked workers)."""
    rank_zero = trainer.is_global_zero and _launched_by_multiprocessing(trainer)
    send_spawn_return(monitor._spawn_return, monitor.state_dict, rank_zero)


#: seconds every rank of several processes releases the GIL at the monitor's teardown (:func:`end_of_run`)
SETTLE_SECONDS = 0.05


def end_of_run(monitor: Any, trainer: Trainer) -> None:
    """At teardown: :func:`send_results`; with several processes, then the GIL released for :data:`SETTLE_SECONDS`.

    gloo's worker threads free a finished collective's tensors after its caller has returned; a tensor that Python has
    let go of by then needs the GIL to be freed, and if the interpreter has begun to exit (a ``ddp_spawn`` worker soon
    after a short ``test``, the monitor's broadcasts among its last collectives) the process aborts ("terminate called
    without an active exception", a core dump showed it). The pause lets those threads finish first."""
    send_results(monitor, trainer)
    if trainer.world_size > 1:
        time.sleep(SETTLE_SECONDS)


def receive_in_worker(monitor: Any, trainer: Trainer) -> None:
    """At setup in a worker forked by ``ddp_notebook``: the results of the caller's earlier fit that the caller has not
    read yet (a spawned worker got them pickled), so that a ``validate`` after the fit continues it."""
    if _launched_by_multiprocessing(trainer):
        if (state := receive_spawn_return(monitor._spawn_return, worker=True)) is not None:
            monitor.load_state_dict(state)


def receive_spawn_return(target: tuple[str, int] | None, worker: bool = False) -> dict[str, Any] | None:
    """In the main process: the state rank 0 wrote to ``target`` (once; the file is deleted), else None. In a
    ``worker`` (a process forked from the main one before it read the file): the same state, the file left for the
    main process."""
    if target is None or (os.getpid() != target[1]) != worker or not os.path.exists(target[0]):
        return None
    state = torch.load(target[0], weights_only=True)
    if not worker:
        os.remove(target[0])
    return state
