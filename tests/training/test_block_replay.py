"""Block replay on toy blocks: the counters read exactly as a block-by-block trace, and only identical blocks replay."""

import pytest
import torch

from srpo.training.block_replay import BlockReplay
from srpo.training.memory import LiveBytesPeak, SavedTensors


class Split(torch.nn.Module):
    """A block returning two slices of one tensor (as FLUX's single-stream block does); ``square`` changes what it saves."""

    def __init__(self, square: bool = False):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.square = square

    def forward(self, a: torch.Tensor, b: torch.Tensor, shared: torch.Tensor):
        y = self.linear(torch.cat([a, b], dim=1) * shared).relu()  # [B, 8]
        if self.square:
            y = y * y
        return y[:, :4], y[:, 4:]


class Toy(torch.nn.Module):
    def __init__(self, kinds: list[bool]):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Split(k) for k in kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = torch.sigmoid(x[:1, :1] * 3)  # one tensor every block multiplies by (saved by the first only)
        a, b = x[:, :4], x[:, 4:]
        for block in self.blocks:
            a, b = block(a, b, shared)
        return a.sum() + b.sum()


KINDS = [False] * 5 + [True] * 4 + [False] * 2


def saved_trace(model: Toy, x: torch.Tensor, enabled: bool):
    saved = SavedTensors({id(p) for p in model.parameters()})
    handles = saved.watch_blocks(list(model.blocks))
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), \
            BlockReplay(model, ("Split",), saved=saved, enabled=enabled) as replay:
        model(x)
    for h in handles:
        h.remove()
    return (saved.outside, saved.by_block, saved.block_inputs, saved.total, saved.checkpointed), replay


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_replayed_saved_bytes_equal_the_block_by_block_trace(device):
    torch.manual_seed(0)
    model = Toy(KINDS).to(device)
    x = torch.randn(3, 8, device=device, requires_grad=True)  # [B, 8]
    full, none = saved_trace(model, x, enabled=False)
    replayed, replay = saved_trace(model, x, enabled=True)
    assert none.replayed == 0 and replayed == full
    # each key is run twice for real, then replayed: the first plain run (unsaved shared), two steady ones, two
    # replays; two squared blocks run, two replayed; the plain blocks after them have new inputs' status: run
    assert replay.replayed >= 4 and replay.run + replay.replayed == len(KINDS)


def test_a_block_with_another_attribute_is_never_replayed_for_it():
    model = Toy([False, False, False] + [True]).to("meta")
    model.blocks[3].square = False  # same parameters, same inputs: the attribute alone tells them apart
    x = torch.empty(2, 8, device="meta", requires_grad=True)
    _, replay = saved_trace(model, x, enabled=True)
    assert replay.replayed == 1  # block 3 is block 2's twin
    model.blocks[3].square = True
    _, replay = saved_trace(model, x, enabled=True)
    assert replay.replayed == 0


def test_replayed_no_grad_peak_equals_the_block_by_block_peak():
    model = Toy(KINDS).to("meta")
    x = torch.empty(4, 8, device="meta")
    peaks = []
    for enabled in (False, True):
        with torch.no_grad(), LiveBytesPeak() as live, BlockReplay(model, ("Split",), live=live, enabled=enabled) as r:
            model(x)
        peaks.append((live.peak, r.replayed))
    assert peaks[0][0] == peaks[1][0] and peaks[1][1] > 0
