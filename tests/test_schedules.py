import pytest
import torch

from srpo.schedules import (default_step_size, grid_position, linear_discount, linear_k, shift_sigma, shifted_linspace_discount,
                            sigma_schedule, training_grid)


def test_shift_fixes_endpoints_and_raises_midpoints():
    t = torch.tensor([0.0, 0.5, 1.0])
    s = shift_sigma(t, 3.0)
    assert s[0] == 0 and s[2] == 1
    assert s[1] == pytest.approx(0.75)  # 3 * 0.5 / (1 + 2 * 0.5)
    assert torch.equal(shift_sigma(t, 1.0), t)


def test_sigma_schedule_runs_from_noise_to_clean():
    s = sigma_schedule(25, 3.0)
    assert s.shape == (26,)
    assert s[0] == 1 and s[-1] == 0
    assert bool((s[1:] < s[:-1]).all())


def test_default_training_grid_matches_the_authors_bounds():
    grid = training_grid()  # indices 5..25 of the shifted 50-step schedule
    assert grid[0] == pytest.approx(0.9643, abs=1e-3)
    assert grid[-1] == pytest.approx(0.75, abs=1e-4)
    assert bool((grid[1:] < grid[:-1]).all())
    assert default_step_size(grid) == pytest.approx(0.02143, abs=1e-4)  # about 0.02


def test_training_grid_rejects_bad_indices():
    with pytest.raises(ValueError, match="start_index"):
        training_grid(25, 5)


def test_linear_discount_downweights_late_levels():
    w = linear_discount(torch.tensor([0.95, 0.85, 0.75]), 0.75, 0.95, floor=0.2)
    assert w.tolist() == pytest.approx([1.0, 0.6, 0.2])


def test_grid_position_counts_from_the_clean_end_and_is_clamped():
    pos = grid_position(torch.tensor([0.70, 0.75, 0.85, 0.95, 0.99]), 0.75, 0.95)
    assert pos.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_shifted_linspace_discount_is_the_authors_shifted_index_of_each_level():
    lo, hi = 0.75, 0.95
    sigmas = torch.linspace(hi, lo, 5)  # earliest first
    w = shifted_linspace_discount(sigmas, lo, hi, shift=3.0, floor=0.1)
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(0.1)
    assert bool((w[1:] <= w[:-1]).all())
    assert w[2] > 0.1 + 0.9 * 0.5  # the shift keeps weights high for longer than a plain linspace
    # authors (Qwen-Image): sd3_time_shift(3, linspace(0, 1, L + 1))[index], the index from the clean end
    L, index = 100, 37
    authors = shift_sigma(torch.linspace(0, 1, L + 1, dtype=torch.float64), 3.0)[index]
    level = lo + (hi - lo) * index / L
    assert float(shifted_linspace_discount(torch.tensor(level), lo, hi, 3.0, 0.0)) == pytest.approx(float(authors))
    # a level's weight is its own: it does not depend on which other levels were drawn with it
    assert float(shifted_linspace_discount(sigmas[2:3], lo, hi, 3.0, 0.1)) == pytest.approx(float(w[2]))


def test_linear_k_is_linear_from_the_lowest_level_to_the_highest():
    assert linear_k(0.75, 0.75, 0.95, 0.10, 0.25) == pytest.approx(0.10)
    assert linear_k(0.95, 0.75, 0.95, 0.10, 0.25) == pytest.approx(0.25)
    assert linear_k(0.85, 0.75, 0.95, 0.30, 0.01) == pytest.approx(0.155)
    assert linear_k(0.70, 0.75, 0.95, 0.30, 0.01) == pytest.approx(0.30)  # below the grid: clamped
