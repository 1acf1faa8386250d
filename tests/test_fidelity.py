"""The paper's toy result at full settings: 1024 latents, 100 epochs, seed 0, raw Sharkey data."""

import pytest

from randsae.experiments.toy import ToyConfig, run_toy


@pytest.mark.slow
def test_goldilocks_recovery_dense_at_small_c_collapse_at_large_c(tmp_path):
    coefs = [0.001, 0.003, 0.0055, 0.01, 0.018, 0.03, 1.0]
    config = ToyConfig(data=["sharkey"], transform=["none"], latents=[1024], l1=coefs, seeds=1,
                       epochs=100)
    rows = {r.l1_coef: r for r in run_toy(config, tmp_path, progress=False)}
    band = [rows[c].mmcs for c in coefs if 3e-3 <= c <= 3e-2]
    assert max(band) >= 0.97, band
    assert rows[0.001].l0 > 50  # far above the 5 active features: not sparse enough
    assert rows[0.001].mmcs < 0.9
    assert rows[1.0].fvu > 0.95  # collapsed: explains almost nothing
