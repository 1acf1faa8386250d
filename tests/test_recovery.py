"""`randsae recovery` and what it stands on: the independent-feature stream (exact, seeded per step), every
architecture of `lm train` with every random dictionary on it, recovery where the answer is known, resuming after a
fault triggered by what the run writes, and the command's outputs."""

import dataclasses

import pytest
import torch

from randsae import io
from randsae.data.independent import Stream, bernoulli_positions
from randsae.experiments import recovery
from randsae.experiments.recovery import RecoveryConfig, run_recovery
from randsae.sae.dictionaries import DICTIONARIES
from randsae.tables import RecoveryRow, read_table
from randsae.training.forms import BatchTopKTraining, JumpReLUTraining, batch_top
from randsae.training.trainer import ARCHITECTURES

# the small toy: 16 inputs, 64 features, 2 active per sample, as many latents as features
SMALL = dict(num_inputs=16, num_features=64, avg_active=2.0, latents=64, k=2, batch_size=256, lr=3e-3,
             warmup_steps=100, held_out=4096, probabilities=["constant"])


def small(**changes) -> RecoveryConfig:
    return RecoveryConfig(**{**SMALL, **changes})


def test_the_stream_is_a_function_of_seed_and_step():
    stream, again = Stream(16, 64, 2, 1.0, 0.5, seed=3), Stream(16, 64, 2, 1.0, 0.5, seed=3)
    assert torch.equal(stream.batch(7, 512), again.batch(7, 512))  # a resumed run sees the same batch 7
    assert not torch.equal(stream.batch(7, 512), stream.batch(8, 512))
    assert not torch.equal(stream.held_out(512), stream.batch(0, 512))
    assert not torch.equal(Stream(16, 64, 2, 1.0, 0.5, seed=4).batch(7, 512), stream.batch(7, 512))


@pytest.mark.parametrize("spread", [1.0, 10 ** 4.3])
def test_the_stream_turns_each_feature_on_with_its_probability(spread):
    stream = Stream(20, 400, 8, spread, 0.5, seed=0)
    counts = torch.zeros(400, dtype=torch.float64)
    for step in range(40):
        codes = stream.codes(2048, "step", step)
        pairs = codes.samples * 400 + codes.features
        assert len(pairs.unique()) == len(pairs)  # a feature is on at most once in a sample
        counts += torch.bincount(codes.features, minlength=400).double()
    expected = stream.p.double() * 2048 * 40
    z = (counts - expected) / expected.sqrt()
    assert abs(float(z.mean())) < 0.2 and 0.8 < float(z.std()) < 1.2  # binomial counts, nothing more
    assert abs(float(counts.sum()) / (2048 * 40) - 8) < 0.05  # m active per sample on average


def test_the_stream_sums_its_features_at_their_magnitudes():
    stream = Stream(16, 64, 3, 1.0, 0.5, seed=1)
    codes = stream.codes(300, "step", 0)
    dense = torch.zeros(300, 64).index_put_((codes.samples, codes.features), codes.magnitudes)
    assert torch.allclose(stream.samples(codes, 300), dense @ stream.features.T, atol=1e-5)


def test_certain_and_impossible_features_are_always_and_never_on():
    rows, features = bernoulli_positions(torch.tensor([1.0, 0.0, 0.5]), 1000, torch.Generator().manual_seed(0))
    assert len(bernoulli_positions(torch.zeros(3), 10, torch.Generator())[0]) == 0
    counts = torch.bincount(features, minlength=3)
    assert counts[0] == 1000 and counts[1] == 0 and 400 < counts[2] < 600
    assert torch.equal(rows[features == 0].sort().values, torch.arange(1000))


def jumprelu() -> JumpReLUTraining:
    sae = JumpReLUTraining(12, 64, 5, seed=1, bandwidth=0.5)  # wide: many entries near their threshold
    sae.first_batch(torch.randn(300, 12, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        sae.log_threshold.add_(torch.randn(64, generator=torch.Generator().manual_seed(3)) * 0.2)
    return sae


@pytest.mark.parametrize("make", [lambda: BatchTopKTraining(12, 64, 3, seed=1),
                                  lambda: BatchTopKTraining(12, 64, 3, seed=1, widths=[16, 40, 64]), jumprelu],
                         ids=["batchtopk", "matryoshka", "jumprelu"])
def test_the_sparse_training_forward_is_the_dense_function_with_the_dense_gradients(make):
    sae = make()
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
    x[3] *= 30  # a row that holds more of the batch's largest than its share: BatchTopK's cut must widen for it
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    losses, grads, active = [], [], []
    for forward in (sae.forward, sae.forward_dense):
        sae.zero_grad()
        out = forward(x)
        loss = sum((r - x).square().sum() for r in (out.reconstruction, *out.prefixes)) / 100
        loss = loss + (out.penalty if out.penalty is not None else 0)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append([p.grad.clone() for p in sae.parameters()])
        active.append(int((out.values > 0).sum()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and active[0] == active[1] > 0
    for (name, _), sparse, dense in zip(sae.named_parameters(), *grads, strict=True):
        assert float(dense.abs().max()) > 0, name  # every parameter has a gradient to compare
        assert torch.allclose(sparse, dense, rtol=1e-4, atol=1e-5 * float(dense.abs().max())), name


def test_batch_top_keeps_exactly_the_largest_across_the_batch():
    pre = torch.rand(30, 50)
    pre[0] += 5  # row 0 holds the 50 largest
    rows, latents = batch_top(pre, 60)
    chosen = pre[rows, latents]
    assert len(chosen) == 60 and float(chosen.min()) >= float(pre.flatten().topk(60).values.min())
    assert int((rows == 0).sum()) == 50


def test_a_trained_topk_sae_recovers_most_features_from_streamed_samples_and_a_frozen_random_decoder_few(tmp_path):
    rows = run_recovery(small(samples=204_800, points=3, architectures=["topk"],
                              dictionaries=["trained", "frozen-decoder"]), tmp_path, progress=False)
    last = {r.dictionary: r for r in rows if r.samples == 204_800}
    assert last["trained"].recovered >= 48, last["trained"]  # most of the 64
    assert last["frozen-decoder"].recovered <= 4, last["frozen-decoder"]
    assert last["trained"].explained_variance > last["frozen-decoder"].explained_variance + 0.15
    trained = sorted((r for r in rows if r.dictionary == "trained"), key=lambda r: r.samples)
    assert [r.samples for r in trained] == [51_200, 102_400, 204_800]  # samples seen doubling to the budget
    assert trained[0].recovered < trained[-1].recovered  # recovery grows with samples seen


def test_every_architecture_trains_with_every_dictionary_on_the_toy(tmp_path):
    config = small(samples=4096, points=2, architectures=list(ARCHITECTURES), dictionaries=list(DICTIONARIES),
                   matryoshka_fractions=[0.5, 0.3, 0.2])
    rows = run_recovery(config, tmp_path, progress=False)
    assert {(r.architecture, r.dictionary) for r in rows} == {(a, d) for a in ARCHITECTURES for d in DICTIONARIES}
    assert all(0 <= r.recovered <= 64 and r.l0 > 0 and r.seconds >= 0 for r in rows)
    assert all(-1 < r.explained_variance <= 1 for r in rows)
    state = torch.load(tmp_path / "state" / "constant-matryoshka-trained.pt", weights_only=True)
    assert state["steps"] == 16
    assert recovery.matryoshka_widths(3200, [0.5, 0.3, 0.2]) == [1600, 2560, 3200]


class Fault(Exception):
    pass


def numbers(rows: list[RecoveryRow]) -> list[tuple]:
    """The rows without their timings, in a fixed order."""
    timing = {"seconds", "seconds_per_million", "elapsed"}
    return sorted(tuple(v for k, v in dataclasses.asdict(r).items() if k not in timing) for r in rows)


def test_a_run_broken_after_a_write_resumes_to_the_unbroken_table(tmp_path):
    config = small(samples=16_384, points=3, architectures=["topk", "batchtopk"], dictionaries=["trained"])
    whole = run_recovery(config, tmp_path / "whole", progress=False)
    for writes in (1, 4, 7):  # after the first row, after a state, in the second unit
        out = tmp_path / f"broken{writes}"
        seen = []

        def fault(path, seen=seen, writes=writes):
            seen.append(path)
            if len(seen) == writes:
                raise Fault(path)

        io.AFTER_WRITE.append(fault)
        try:
            with pytest.raises(Fault):
                run_recovery(config, out, progress=False)
        finally:
            io.AFTER_WRITE.remove(fault)
        resumed = run_recovery(config, out, progress=False)
        assert numbers(resumed) == numbers(whole)
        assert numbers(read_table(out / "recovery.csv", RecoveryRow)) == numbers(whole)


def randsae(capsys, *args) -> tuple[int, str]:
    """`randsae -q ARGS` in this process (the CLI's own entry point): its exit code and what it wrote to stderr."""
    from randsae.cli import main

    capsys.readouterr()
    code = main(["-q", *args])
    return code, capsys.readouterr().err


TINY = ["--num-inputs", "8", "--num-features", "64", "--avg-active", "2", "--latents", "64", "--k", "2",
        "--samples", "2048", "--points", "2", "--batch-size", "256", "--held-out", "512", "--architectures",
        "topk,jumprelu", "--dictionaries", "trained,frozen-encoder"]


def test_the_command_writes_its_table_and_figure_and_refuses_other_settings_in_the_same_out(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = randsae(capsys, "recovery", *TINY, "--out", str(out))
    assert code == 0, err
    table = (out / "table.md").read_text()
    assert table.count("| constant |") == 4 and table.count("| log-uniform |") == 4
    assert "(still growing)" in table or "(stopped)" in table
    assert (out / "recovery.png").stat().st_size > 10_000
    rows = read_table(out / "recovery.csv", RecoveryRow)
    assert len(rows) == 16 and {r.samples for r in rows} == {1024, 2048}
    assert randsae(capsys, "recovery", *TINY, "--out", str(out))[0] == 0  # all done: nothing to do
    assert len(read_table(out / "recovery.csv", RecoveryRow)) == 16
    code, err = randsae(capsys, "recovery", *TINY, "--lr", "0.01", "--out", str(out))
    assert code == 2 and "other settings (lr" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, words", [
    (["--architectures", "topk,sparse"], "unknown architectures value 'sparse'"),
    (["--dictionaries", "trained,trained"], "takes each of its values once"),
    (["--probabilities", "sometimes"], "unknown probabilities value 'sometimes'"),
    (["--matryoshka-fractions", "0.5,0.6"], "summing to 1"),
    (["--samples", "100"], "at least one batch"),
    (["--log-uniform-decades", "12", "--avg-active", "8"], "put some above 1"),
    (["--samples", "lots"], "argument --samples"),
    (["--k", "80"], "must not exceed the latents"),
])
def test_bad_settings_are_one_sentence(flags, words, tmp_path, capsys):
    code, err = randsae(capsys, "recovery", *TINY, *flags, "--out", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "out").exists()


def test_batchtopk_takes_the_auxk_loss_as_topk_does_and_jumprelu_refuses_it():
    from randsae.errors import BadInput
    from randsae.training.trainer import TopKTrainConfig

    sae = BatchTopKTraining(12, 64, 3, seed=1)
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    dead = torch.zeros(64, dtype=torch.bool)
    dead[10:30] = True
    out = sae(x, dead)
    pre = sae.pre_activations(x).masked_fill_(~dead, -1.0)
    _, indices = pre.topk(6, dim=-1)  # d / 2 of the 20 dead latents
    expected = sae.decode(sae.selected_activations(x, indices), indices, bias=False)
    assert out.aux_reconstruction is not None and torch.allclose(out.aux_reconstruction, expected, atol=1e-6)
    assert sae(x).aux_reconstruction is None
    with pytest.raises(BadInput, match="JumpReLU SAE has none"):
        TopKTrainConfig(architecture="jumprelu", auxk_alpha=1 / 32)


@pytest.mark.parametrize("flags, words", [
    (["--log-uniform-decades", "400"], "log_uniform_decades must lie in (0, 30]"),
    (["--architectures", "jumprelu", "--auxk-alpha", "0.5"], "a JumpReLU SAE has none"),
])
def test_more_bad_settings_are_one_sentence(flags, words, tmp_path, capsys):
    code, err = randsae(capsys, "recovery", *TINY, *flags, "--out", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "out").exists()


def test_points_past_the_runs_steps_are_the_steps_there_are(tmp_path, capsys):
    code, err = randsae(capsys, "recovery", *TINY, "--points", "1000000000000", "--architectures", "topk",
                        "--dictionaries", "trained", "--probabilities", "constant", "--out", str(tmp_path / "out"))
    assert code == 0, err
    rows = read_table(tmp_path / "out" / "recovery.csv", RecoveryRow)
    assert [r.steps for r in rows] == [1, 2, 4, 8]  # 2,048 samples at batch 256: every doubling there is


@pytest.mark.parametrize("content", [b"not a state", b"", "other"], ids=["garbage", "truncated", "other-unit"])
def test_a_damaged_state_file_is_one_sentence_naming_it(content, tmp_path, capsys):
    args = [*TINY, "--architectures", "topk", "--dictionaries", "trained", "--probabilities", "constant",
            "--points", "2", "--out", str(tmp_path / "out")]
    path = tmp_path / "out" / "state" / "constant-topk-trained.pt"

    def fault(written):
        if written == path:
            raise Fault(written)  # killed once the first point's state is saved

    io.AFTER_WRITE.append(fault)
    try:
        with pytest.raises(Fault):
            randsae(capsys, "recovery", *args)
    finally:
        io.AFTER_WRITE.remove(fault)
    if content == "other":  # a JumpReLU unit's state where TopK's was
        state = torch.load(path, weights_only=True)
        state["sae"]["log_threshold"] = torch.zeros(64)
        torch.save(state, path)
    else:
        path.write_bytes(content)
    code, err = randsae(capsys, "recovery", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(path) in lines[0] and "not a saved state" in lines[0], err
