import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vaelens
from vaelens import robustness_scores
from vaelens.geometry import Spectrum


def _scores(rows, **kw):
    return robustness_scores(torch.tensor(rows, dtype=torch.float64), **kw)


def test_hand_computed_spectrum():
    s = _scores([[2.0, 1.0]])
    p = [2 / 3, 1 / 3]
    assert s.spectral_radius.item() == 2.0
    assert s.trace.item() == 3.0
    assert s.von_neumann_entropy.item() == pytest.approx(-sum(q * math.log(q) for q in p))
    assert s.log_pdet.item() == pytest.approx(math.log(2.0))
    assert s.condition_number.item() == pytest.approx(2.0)
    assert s.effective_rank.item() == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    released = _scores([[2.0, 1.0]], normalize="max")  # s_i = lambda_i / lambda_1
    assert released.von_neumann_entropy.item() == pytest.approx(-0.5 * math.log(0.5))


def test_flat_spectrum_has_maximal_entropy():
    s = _scores([[3.0, 3.0, 3.0, 3.0]])
    assert s.von_neumann_entropy.item() == pytest.approx(math.log(4))
    assert s.effective_rank.item() == pytest.approx(4.0)
    assert s.condition_number.item() == pytest.approx(1.0)


def test_rank_one_spectrum():
    s = _scores([[4.0, 0.0, 0.0]])
    assert s.von_neumann_entropy.item() == 0.0
    assert s.effective_rank.item() == 1.0
    assert s.condition_number.item() == 1.0
    assert s.log_pdet.item() == pytest.approx(math.log(4.0))
    assert _scores([[4.0, 0.0, 0.0]], normalize="max").von_neumann_entropy.item() == 0.0


def test_all_zero_spectrum_is_finite():
    s = _scores([[0.0, 0.0, 0.0]])
    for name, value in s.as_dict().items():
        assert torch.isfinite(value).all(), name
    assert s.spectral_radius.item() == 0 and s.von_neumann_entropy.item() == 0
    assert s.log_pdet.item() == 0 and s.condition_number.item() == 1 and s.effective_rank.item() == 1


def test_subnormal_spectrum():
    s = _scores([[5e-324]])
    assert s.condition_number.item() == 1.0 and s.effective_rank.item() == 1.0
    assert s.von_neumann_entropy.item() == 0.0 and s.log_pdet.item() == pytest.approx(math.log(5e-324))


def test_tiny_and_roundoff_eigenvalues():
    # 1e-300 alone is a legitimate (tiny) spectrum; 1e-20 next to 1 is round-off and counts as zero
    tiny = _scores([[1e-300, 5e-301]])
    assert tiny.condition_number.item() == pytest.approx(2.0)
    roundoff = _scores([[1.0, 1e-20, 0.0]])
    assert roundoff.condition_number.item() == 1.0 and roundoff.effective_rank.item() == 1.0
    for s in (tiny, roundoff, _scores([[1e-30, 1e-40]], normalize="max")):
        assert all(torch.isfinite(v).all() for v in s.as_dict().values())


def test_accepts_spectrum_and_float32():
    values = torch.tensor([[1.0, 0.5]], dtype=torch.float32)
    s = robustness_scores(Spectrum(values, None, "stochastic"))
    assert s.spectral_radius.dtype == torch.float32


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(0, 1e6, allow_subnormal=True), min_size=1, max_size=8).map(sorted),
        min_size=1,
        max_size=4,
    ).filter(lambda rows: len({len(r) for r in rows}) == 1)
)
def test_scores_are_never_nan_and_bounded(rows):
    values = torch.tensor([list(reversed(r)) for r in rows], dtype=torch.float64)
    for normalize in ("trace", "max"):
        s = robustness_scores(values, normalize=normalize)
        for name, v in s.as_dict().items():
            assert not torch.isnan(v).any(), name
    s = robustness_scores(values)
    r = values.shape[1]
    assert (s.von_neumann_entropy >= -1e-12).all() and (s.von_neumann_entropy <= math.log(r) + 1e-9).all()
    assert (s.effective_rank >= 1 - 1e-9).all() and (s.effective_rank <= r + 1e-9).all()
    assert (s.condition_number >= 1 - 1e-12).all()


@pytest.mark.parametrize(
    "values, kw, match",
    [
        (torch.ones(3), {}, r"shape \(B, r\)"),
        (torch.tensor([[1.0, float("nan")]]), {}, "NaN"),
        (torch.ones(1, 2), {"normalize": "log"}, "normalize must be"),
    ],
)
def test_bad_input(values, kw, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        robustness_scores(values, **kw)


def test_median_is_numpys_everywhere():
    """torch's median of an even count is the lower middle value; vaelens reports numpy's."""
    import numpy as np

    from vaelens._records import describe

    values = torch.tensor([1.0, 2.0, 10.0, 20.0])
    assert describe(values)["median"] == 6.0 == float(np.median(values.numpy()))
    scores = vaelens.robustness_scores(torch.tensor([[1.0], [2.0], [10.0], [20.0]]))
    assert scores.summary()["spectral_radius"]["median"] == 6.0
