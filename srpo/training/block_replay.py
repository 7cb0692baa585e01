"""Replay the counted effect of a transformer's repeated blocks in the memory plan's meta traces.

A real-size transformer is dozens of identical blocks (Qwen-Image: 60, FLUX.1: 19 + 38), and tracing it on
the meta device spends nearly all its time dispatching the same per-op Python calls once per block. The
counters of a trace (:class:`~srpo.training.memory.SavedTensors`: bytes autograd saves per block;
:class:`~srpo.training.memory.LiveBytesPeak`: the peak of live bytes of a no-grad forward) see a block only
through what it saves, what it allocates and what it returns. :class:`BlockReplay` runs a block for real
and records exactly that; a later call with the same key returns fresh meta outputs of the recorded
description and applies the recorded counter effects instead of running the block.

Why the replay is exact. The key holds everything a block's computation (hence its counts) depends on:
the block's class; every parameter and buffer's (name, shape, dtype, requires_grad); every simple attribute
(numbers, strings, dtypes, containers of them; other objects by type) of every submodule, so that e.g.
``context_pre_only`` or a layer index separates blocks; the grad mode; and the arguments as a pytree of
(shape, stride, dtype, requires_grad, device, which base they view) for tensors and values for the rest.
What it depends on outside the block is state of the counters themselves:

- ``SavedTensors`` counts a saved tensor's base once (by id). A saved base is an argument's base (whether it
  was already saved is in the key, and the replay marks it saved as the real run did), a tensor the block
  creates (new on every call, so counted on every call), or another tensor from outside the arguments (a
  shared constant): that one is counted by the first call that saves it and never again, so a key is run
  for real twice and the second, steady, record is replayed. An output's base the real run saved is marked
  saved in the replay too, and outputs that share a base (FLUX's single block returns two slices of one
  tensor) are replayed as views of one fresh base of the recorded size, so later blocks dedup as before.
- ``LiveBytesPeak`` sees the peak inside the block relative to the live bytes at entry (replayed as that
  offset from the live bytes at the replay's entry), and the bytes left alive at exit: a key is replayed
  only where building its outputs under the same mode (a trial build after the real run) adds exactly
  those bytes, so the replay leaves the same bytes alive, released when the same outputs die.

A block called a second time in one trace (a module reused) runs for real: its parameters were seen.
Anything a key cannot describe (an argument of another type, an output that is not a tensor or a simple
value) runs for real. ``REPLAY = False`` turns the mechanism off, for the test that compares the two traces.
"""

from __future__ import annotations

import torch
import torch.utils._pytree as pytree

#: Replay repeated blocks in the memory plan's traces (the tests switch it off to compare with full traces).
REPLAY = True

_SIMPLE = (int, float, bool, str, type(None), torch.dtype, torch.device)


class _Opaque(Exception):
    """A value the key cannot describe: the block runs for real."""


def _describe_value(value, own: str, depth: int = 0):
    """A hashable description of a submodule attribute: simple values as themselves, containers recursively.

    A string naming the block's own place in the model (peft's ``target_name``: ``transformer_blocks.7.attn.to_q``)
    is a name, not behaviour: ``own`` (that place, ``transformer_blocks.7``) reads as ``<block>`` in it."""
    if isinstance(value, str) and own and (value == own or value.startswith(own + ".")):
        return "<block>" + value[len(own):]
    if isinstance(value, _SIMPLE):
        return value
    if depth < 3 and isinstance(value, (tuple, list, set, frozenset)):
        items = [_describe_value(v, own, depth + 1) for v in value]
        return (type(value).__name__, tuple(sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items))
    if depth < 3 and isinstance(value, dict):
        return ("dict", tuple(sorted(((repr(k), _describe_value(v, own, depth + 1)) for k, v in value.items()))))
    if isinstance(value, torch.Tensor):  # a plain tensor attribute (not a parameter or buffer)
        return ("tensor", tuple(value.shape), value.dtype, value.requires_grad)
    return ("object", type(value).__qualname__)  # a processor, a function: its type (its simple attributes below)


def block_signature(block: torch.nn.Module, own: str = "") -> tuple:
    """What a block computes, as far as its own state goes: class, parameters, buffers, submodules' attributes.

    ``own``: the block's qualified name in the model (strings naming it are not compared: :func:`_describe_value`)."""
    parts: list = [type(block).__qualname__]
    for name, p in block.named_parameters():
        parts.append(("p", name, tuple(p.shape), p.dtype, p.requires_grad))
    for name, b in block.named_buffers():
        parts.append(("b", name, tuple(b.shape), b.dtype, b.requires_grad))
    for name, module in block.named_modules():
        attrs = tuple(sorted((k, _describe_value(v, own)) for k, v in vars(module).items()
                             if k not in ("_parameters", "_buffers", "_modules", "forward") and not k.endswith("hooks")
                             and not k.startswith("_forward_") and not k.startswith("_backward_")))
        hooks = (len(module._forward_hooks), len(module._forward_pre_hooks)) if module is not block else ()
        parts.append(("m", name, type(module).__qualname__, attrs, hooks))
        processor = getattr(module, "processor", None)  # attention processors are plain objects
        if processor is not None and not isinstance(processor, torch.nn.Module):
            parts.append(("proc", name, tuple(sorted((k, _describe_value(v, own)) for k, v in vars(processor).items()))
                          if hasattr(processor, "__dict__") else ()))
    return tuple(parts)


def _base(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


class BlockReplay:
    """Context manager: while active, ``model``'s blocks (modules of ``block_classes``) replay their recorded effect
    on ``saved`` and ``live``.

    ``saved``: the :class:`~srpo.training.memory.SavedTensors` counting the trace (or None);
    ``live``: the :class:`~srpo.training.memory.LiveBytesPeak` mode of a no-grad trace (or None).
    ``replayed`` / ``run``: how many block calls were replayed / run for real.
    """

    def __init__(self, model: torch.nn.Module, block_classes: tuple[str, ...], saved=None, live=None,
                 enabled: bool | None = None):
        self.names = {id(m): name for name, m in model.named_modules() if type(m).__name__ in block_classes}
        self.blocks = [m for m in model.modules() if id(m) in self.names]
        self.saved, self.live = saved, live
        self.enabled = REPLAY if enabled is None else enabled
        self.replayed = self.run = 0
        self._records: dict[tuple, dict] = {}  # key -> the record of its latest real run
        self._real_runs: dict[tuple, int] = {}
        self._never: set[tuple] = set()  # keys whose effect a record could not describe: always run for real
        self._called: set[int] = set()
        self._signatures: dict[int, tuple] = {}

    def __enter__(self):
        if self.enabled:
            for block in self.blocks:
                block.forward = self._wrap(block, block.forward)  # an instance attribute: nn.Module.__call__ finds it
        return self

    def __exit__(self, *exc):
        for block in self.blocks:
            block.__dict__.pop("forward", None)
        return False

    # ---- keys -------------------------------------------------------------------------------
    def _key(self, block, args, kwargs) -> tuple[tuple, list[torch.Tensor]]:
        """(key, the distinct bases of the argument tensors, in first-seen order)."""
        leaves, spec = pytree.tree_flatten((args, kwargs))
        bases: list[torch.Tensor] = []
        desc = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                base = _base(leaf)
                k = next((i for i, b in enumerate(bases) if b is base), None)
                if k is None:
                    k = len(bases)
                    bases.append(base)
                desc.append(("t", tuple(leaf.shape), leaf.stride(), leaf.storage_offset(), leaf.dtype,
                             leaf.requires_grad, leaf.device.type, k, leaf is base))
            elif isinstance(leaf, _SIMPLE):
                desc.append(("v", leaf))
            else:
                raise _Opaque
        base_desc = tuple((tuple(b.shape), b.stride(), b.dtype, b.requires_grad,
                           self.saved is not None and id(b) in self.saved.seen) for b in bases)
        if id(block) not in self._signatures:
            self._signatures[id(block)] = block_signature(block, self.names[id(block)])
        key = (self._signatures[id(block)], str(spec), tuple(desc), base_desc, torch.is_grad_enabled(),
               torch.is_autocast_enabled(), self.saved is not None and self.saved.block is not None)
        return key, bases

    # ---- record and replay ----------------------------------------------------------------
    def _wrap(self, block, forward):
        def replaying_forward(*args, **kwargs):
            try:
                key, bases = self._key(block, args, kwargs)
            except _Opaque:
                key, bases = None, []
            first_call = id(block) not in self._called
            self._called.add(id(block))
            if key is not None and first_call and key not in self._never and self._real_runs.get(key, 0) >= 2:
                self.replayed += 1
                return self._replay(self._records[key], bases)
            self.run += 1
            out, record = self._record(forward, args, kwargs, bases)
            if key is not None and first_call:
                self._real_runs[key] = self._real_runs.get(key, 0) + 1
                if record is None:
                    self._never.add(key)
                else:
                    self._records[key] = record
            return out

        return replaying_forward

    def _record(self, forward, args, kwargs, bases):
        saved, live = self.saved, self.live
        block_index = saved.block if saved is not None else None
        before_bytes = saved.by_block.get(block_index, 0) if saved is not None and block_index is not None else 0
        before_outside = saved.outside if saved is not None else 0
        seen_before = [id(b) in saved.seen for b in bases] if saved is not None else []
        seen_count = len(saved.seen) if saved is not None else 0
        if live is not None:
            entry, peak_before = live.current, live.peak
            live.peak = live.current  # the peak inside the block, relative to its entry
        out = forward(*args, **kwargs)
        record: dict | None = {}
        if live is not None:
            record["live_peak"] = live.peak - entry
            record["live_exit"] = live.current - entry
            live.peak = max(peak_before, live.peak)
        if saved is not None:
            record["saved"] = (saved.by_block.get(block_index, 0) - before_bytes) if block_index is not None else 0
            if saved.outside != before_outside:
                record = None  # a block saving outside any block index: not described
            else:
                record["newly_seen_args"] = [k for k, b in enumerate(bases)
                                             if not seen_before[k] and id(b) in saved.seen]
        if record is not None:
            outputs = self._describe_outputs(out, bases)
            # no tensor kept in the record: every lifetime stays as it was
            record["outputs"] = outputs[:3] if outputs is not None else None
            if outputs is None or (live is not None and not self._same_live_exit(record, bases)):
                record = None  # the block left other bytes alive than its outputs
            elif saved is not None:
                newly = set(list(saved.seen)[seen_count:])  # dicts keep insertion order
                if any(was_seen and id(b) not in newly for b, (*_, was_seen) in zip(outputs[3], outputs[2])):
                    record = None  # an output that was saved before the block: not one the block created
        return out, record

    def _describe_outputs(self, out, bases):
        """(spec, leaf descriptions, fresh bases' descriptions, the fresh bases) of a block's output, or None if
        not describable."""
        leaves, spec = pytree.tree_flatten(out)
        fresh: list[torch.Tensor] = []
        desc = []
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                if not isinstance(leaf, _SIMPLE):
                    return None
                desc.append(("v", leaf))
                continue
            base = _base(leaf)
            k = next((i for i, b in enumerate(bases) if b is base), None)
            if k is not None:
                source = ("arg", k)
            else:
                g = next((i for i, b in enumerate(fresh) if b is base), None)
                if g is None:
                    g = len(fresh)
                    fresh.append(base)
                source = ("fresh", g)
            desc.append(("t", source, leaf is base, tuple(leaf.shape), leaf.stride(), leaf.storage_offset()))
        fresh_desc = [(tuple(b.shape), b.stride(), b.dtype, b.device, b.requires_grad,
                       self.saved is not None and id(b) in self.saved.seen) for b in fresh]
        return spec, desc, fresh_desc, fresh

    def _same_live_exit(self, record, bases) -> bool:
        """Whether building the replayed outputs under the live mode adds exactly the bytes the real run left alive.

        (The mode counts what each op returns, views included: it sees tensors below autograd, without ``_base``.)
        A trial build, dropped at once (its bytes are released and the peak restored)."""
        live = self.live
        before, peak = live.current, live.peak
        trial = self._build_outputs(record, bases, mark_seen=False)
        added = live.current - before
        del trial
        live.peak = peak
        return added == record["live_exit"] and live.current == before

    def _replay(self, record, bases):
        saved, live = self.saved, self.live
        if live is not None:
            live.peak = max(live.peak, live.current + record["live_peak"])
        if saved is not None:
            if record["saved"]:
                saved.by_block[saved.block] = saved.by_block.get(saved.block, 0) + record["saved"]
            for k in record["newly_seen_args"]:
                saved.seen[id(bases[k])] = bases[k]
        return self._build_outputs(record, bases, mark_seen=True)

    def _build_outputs(self, record, bases, mark_seen: bool):
        """Fresh meta outputs of the recorded description: views of fresh bases (or of the arguments' bases)."""
        saved = self.saved
        spec, desc, fresh_desc = record["outputs"]
        fresh = []
        for shape, stride, dtype, device, requires_grad, was_seen in fresh_desc:
            t = torch.empty_strided(shape, stride, dtype=dtype, device=device)  # allocated under the live mode
            if requires_grad:
                t = t.requires_grad_().clone()  # a non-leaf, as a computed output is (in-place ops allowed)
            if was_seen and saved is not None and mark_seen:
                saved.seen[id(t)] = t
            fresh.append(t)
        leaves = []
        for d in desc:
            if d[0] == "v":
                leaves.append(d[1])
                continue
            _, (kind, i), is_base, shape, stride, offset = d
            base = bases[i] if kind == "arg" else fresh[i]
            leaves.append(base if is_base else base.as_strided(shape, stride, offset))
        return pytree.tree_unflatten(leaves, spec)
