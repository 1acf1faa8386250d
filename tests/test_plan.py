"""`randsae baseline --plan`: Pythia's published shapes planned offline on a stated machine, the cache decided
by the disk, refusals that name the cheaper setting, the calibration kept per machine, nothing written."""

import pytest

from randsae.cli import main
from randsae.errors import BadInput
from randsae.study.machines import GPU_PEAK, Machine, parse_bytes, parse_machine
from randsae.study.plan import PlanRow, sae_train_bytes
from randsae.study.preflight import planned, preflight
from randsae.study.settings import settings_for
from randsae.study.shapes import write_shape

A100S = "8xA100-80GB,disk=2TB"
TB = 1024**4


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {name: write_shape(name, root / name) for name in ("pythia-160m", "pythia-1b", "pythia-6.9b")}


def plan(shape_dir, machine: str, **overrides) -> tuple:
    settings = settings_for("paper", {"model": str(shape_dir), **overrides})
    check = preflight(settings, plan=True)
    stated = parse_machine(machine)
    return planned(settings, check, shape_dir / "out", stated, stated.devices), check


def test_the_paper_preset_on_pythia_shapes_plans_without_the_hub_and_writes_nothing(shapes, tmp_path, capsys):
    for name in ("pythia-160m", "pythia-1b"):
        out = tmp_path / name
        args = ["baseline", "--model", str(shapes[name]), "--plan", "--machine", A100S, "--out", str(out)]
        assert main(args) == 0
        text = capsys.readouterr().out
        assert text.startswith("| stage | units | tokens | disk written | peak memory per device | layer groups | "
                               "time |")
        for stage in ("train", "eval", "latents", "autointerp", "compare", "report", "total"):
            assert f"| {stage} |" in text, (name, stage)
        assert "| activations |" not in text  # the cache does not fit 2 TB: every layer on the fly
        assert "8 × A100-80GB" in text and "assumed, not measured" in text
        assert not out.exists()


def test_the_numbers_follow_the_shapes(shapes):
    (settings, rows, problem), check = plan(shapes["pythia-160m"], A100S)
    assert problem is None and settings.cache is False  # 100M tokens × 12 layers × 768 × 2 bytes × 5 ≫ 2 TB
    assert check.layers == list(range(12)) and check.shape.d_model == 768
    assert 160e6 < check.shape.parameters < 170e6  # Pythia-160m's 162M, counted on the meta device
    train = [r for r in rows if r.stage == "train"]
    assert len(train) == 5 and all(r.tokens == 100_000_000 for r in train)
    latents = 64 * 768
    # 12 layers over 8 ranks: two SAEs in training on the busiest device, beside the float32 model
    assert train[0].peak_memory_bytes >= check.shape.parameters * 4 + 2 * sae_train_bytes(768, latents, 4096)
    (cached, cached_rows, cached_problem), _ = plan(shapes["pythia-160m"], "8xA100-80GB,disk=20TB", cache=None)
    assert cached.cache is True and cached_problem is None
    acts = [r for r in cached_rows if r.stage == "activations"]
    assert sum(r.disk_bytes for r in acts) >= 5 * 100_000_000 * 12 * 768 * 2


def test_what_does_not_fit_is_refused_in_one_sentence_naming_the_cheaper_setting(shapes, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["baseline", "--model", str(shapes["pythia-160m"]), "--cache", "--plan", "--machine",
                 "8xA100-80GB,disk=1TB", "--out", out]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "more than the 1 TB free there; --no-cache trains on the fly" in error
    # 6.9b: its 8 layers' SAEs (8.6 GB each) do not all fit beside the float32 model on 80 GB: groups
    assert main(["baseline", "--model", str(shapes["pythia-6.9b"]), "--plan", "--machine", A100S, "--out",
                 out]) == 0
    eval_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| eval |"))
    assert eval_row.split("|")[6].strip() == "2", eval_row
    assert main(["baseline", "--model", str(shapes["pythia-6.9b"]), "--plan", "--machine",
                 "8xH200-141GB,disk=2TB", "--out", out]) == 0
    assert "8 × H200-141GB" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("machine", "says"), [
    ("8xFOO-80GB,disk=2TB", "peak=TFLOPS"), ("8xA100-80GB", "no disk=SIZE"), ("cpu,disk=lots", "a size such as"),
    ("eight A100s,disk=1TB", "must start with N×GPU-MEMORY"), ("8xA100-80GB,disk=1TB,speed=3", "is not disk=SIZE"),
])
def test_a_machine_that_cannot_be_read_is_one_sentence(machine, says):
    with pytest.raises(BadInput, match=says):
        parse_machine(machine)


def test_machine_sizes_read_as_people_write_them():
    assert parse_bytes("80GB", "x") == 80 * 1024**3 and parse_bytes("2TB", "x") == 2 * TB
    assert parse_bytes("512MiB", "x") == 512 * 1024**2
    stated = parse_machine("4xH100-80GB,disk=500GB,cores=32")
    assert (stated.devices, stated.device_memory, stated.cores, stated.peak_flops) == (4, 80 * 1024**3, 32,
                                                                                       GPU_PEAK["H100"])
    assert parse_machine("cpu,disk=1TB,memory=32GB").kind == "cpu"


def test_machine_without_plan_is_refused(shapes, tmp_path, capsys):
    assert main(["baseline", "--model", str(shapes["pythia-160m"]), "--machine", A100S, "--out",
                 str(tmp_path / "x")]) == 2
    assert "give it with --plan" in capsys.readouterr().err


def test_this_machine_is_measured_once_and_the_measurement_kept(tiny_dir, tmp_path, monkeypatch, capsys):
    """A plan on this machine measures its throughputs (the tiny model, a server judge that is asked nothing)
    and keeps them; the next plan reads them back instead of measuring."""
    import randsae.study.calibrate as calibrate
    from randsae.io import cache_dir

    args = ["baseline", "--model", str(tiny_dir), "--preset", "demo", "--layers", "0,2", "--tokens", "8k",
            "--context-length", "64", "--device", "cpu", "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m",
            "--plan", "--out", str(tmp_path / "x")]
    from dataclasses import replace

    from randsae.study.stages import REGISTRY
    # no server behind the URL
    monkeypatch.setitem(REGISTRY, "autointerp", replace(REGISTRY["autointerp"], check=None))
    before = set(cache_dir("throughputs").glob("*.json")) if cache_dir("throughputs").is_dir() else set()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "measured here (" in text and "the judge's time is not estimated: it is a server" in text
    assert "| activations | 4 units |" in text
    assert "| autointerp | 4 units | 0 | 0 B | 0 B |  | not estimated (a server judge) |" in text  # not a 0 s
    assert "and the judge's time from start to end" in text
    kept = set(cache_dir("throughputs").glob("*.json")) - before
    assert len(kept) == 1

    def measured_again(*args, **kwargs):
        raise AssertionError("the kept calibration was not used")

    monkeypatch.setattr(calibrate, "measure", measured_again)
    assert main(args) == 0
    again = capsys.readouterr().out  # the same table and basis (the free memory and disk may have moved)
    assert again.split("Machine:")[0] == text.split("Machine:")[0]
    assert again.splitlines()[-1] == text.splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_a_study_begun_keeps_the_cache_it_began_with(shapes, tmp_path):
    """The plan decides the cache once: a rerun (with less disk free, the cache being written) keeps it."""
    from randsae import runs
    from randsae.study.settings import STUDY

    settings = settings_for("paper", {"model": str(shapes["pythia-160m"])})
    check = preflight(settings, plan=True)
    out = tmp_path / "study"
    out.mkdir()
    runs.write_record(out, "baseline", {"study": STUDY, "settings": {"cache": True}})
    small = Machine("A100-80GB", "cuda", 8, 80 * 1024**3, 1 * TB, 16, stated=True, peak_flops=GPU_PEAK["A100"])
    decided, rows, problem = planned(settings, check, out, small, 8)
    assert decided.cache is True and any(r.stage == "activations" and r.disk_bytes for r in rows)
    assert all(isinstance(r, PlanRow) for r in rows)
    assert problem is not None and "--no-cache trains on the fly" in problem  # and the run is refused
