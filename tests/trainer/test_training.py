"""Training behaviour on tiny data: overfitting a batch, exact resume, bad input, NaN, DDP on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.errors import CscError
from runtime.data.synthesize import synthesize_dataset
from trainer.checkpoint import load_checkpoint
from trainer.regimes import plan_base, run_base, run_single, run_transfer
from trainer.train import TrainConfig, TrainingDiverged

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return synthesize_dataset("mixed", 8, tmp_path_factory.mktemp("m"), seed=3, size=64, density=300)


def cfg(**kw):
    base = dict(regime="U-Base", arch="light-unet", steps=4, batch=2, size=64, val_every=2, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_overfits_one_batch():
    from trainer.losses import CeLogJaccardLoss
    from trainer.metrics import confusion_matrix, miou
    from trainer.models import build_model
    from trainer.preprocess import Preprocess
    from runtime.data.simulator import make_microscope

    torch.manual_seed(0)
    frames = [make_microscope("mixed", size=64, seed=9, density=300).frame(i) for i in range(2)]
    x = Preprocess()(torch.from_numpy(np.stack([f.image for f in frames])))
    y = torch.from_numpy(np.stack([f.semantic for f in frames]))
    model = build_model("light-unet")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(120):
        loss = CeLogJaccardLoss()(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    assert loss.item() < 0.3 * first
    assert miou(confusion_matrix(pred, y.numpy(), 3)) > 0.8


def test_base_writes_the_run_folder(mixed, tmp_path):
    result = run_base(mixed, tmp_path / "run", cfg())
    for name in ("best.pt", "last.pt", "metrics.json", "curves.png"):
        assert (tmp_path / "run" / name).exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["regime"] == "U-Base" and len(metrics["history"]["loss"]) == 4
    assert [v["step"] for v in metrics["history"]["val"]] == [2, 4]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["metrics"]["miou"] == max(v["miou"] for v in metrics["history"]["val"]) == result["best_val_miou"]


def test_resume_gives_identical_next_step_loss(mixed, tmp_path):
    full = run_base(mixed, tmp_path / "full", cfg(steps=4))
    run_base(mixed, tmp_path / "part", cfg(steps=2))
    resumed = run_base(mixed, tmp_path / "part", cfg(steps=4), resume=True)
    assert resumed["history"]["loss"] == full["history"]["loss"]
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 4


def test_resume_with_other_settings_is_refused_and_leaves_last_pt(mixed, tmp_path):
    """--resume went on silently with the command's settings (a default --size 256 for the run's 64, a U-Single
    command on a U-Base folder), so the run no longer continued exactly; other classes ended in a traceback."""
    run_base(mixed, tmp_path / "run", cfg(steps=2))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(CscError, match="other settings than the run it continues: batch 2 → 4, size 64 → 128"):
        run_base(mixed, tmp_path / "run", cfg(steps=4, batch=4, size=128), resume=True)
    with pytest.raises(CscError, match="regime 'U-Base' → 'U-Single'"):
        run_base(mixed, tmp_path / "run", cfg(steps=4, regime="U-Single"), resume=True)
    with pytest.raises(CscError, match="at step 2, beyond --steps 1"):
        run_base(mixed, tmp_path / "run", cfg(steps=1), resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_single_and_transfer(tmp_path):
    rbc = synthesize_dataset("rbc", 4, tmp_path / "rbc", seed=1, size=64)
    mac = synthesize_dataset("macrophage", 4, tmp_path / "mac", seed=1, size=64)
    mixed = synthesize_dataset("mixed", 10, tmp_path / "mixed", seed=1, size=64)
    single = run_single(rbc, mac, tmp_path / "single", cfg(regime="U-Single"))
    assert single["config"]["sources"]["rbc"] == str(rbc)
    transfer = run_transfer(tmp_path / "single" / "best.pt", mixed, 3, tmp_path / "transfer",
                            cfg(regime="U-Transfer", lr=0.0))
    assert transfer["config"]["sources"]["n"] == 3
    # At learning rate 0 fine-tuning changes nothing: U-Transfer's weights are exactly the U-Single model it loaded.
    start, end = load_checkpoint(tmp_path / "single" / "best.pt")["model"], load_checkpoint(tmp_path / "transfer" / "last.pt")["model"]
    weights = [k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert weights and all(torch.equal(start[k], end[k]) for k in weights)
    with pytest.raises(CscError, match="--n 50"):
        run_transfer(tmp_path / "single" / "best.pt", mixed, 50, tmp_path / "t2", cfg(regime="U-Transfer"))


def test_bad_inputs(mixed, tmp_path):
    with pytest.raises(ValueError, match="multiple of 32"):
        cfg(size=48)
    with pytest.raises(ValueError, match="unknown architecture"):
        cfg(arch="nope")
    run_base(mixed, tmp_path / "run", cfg(steps=2))
    with pytest.raises(CscError, match="is a 'light-unet' model, not 'vgg16-unet'"):
        load_checkpoint(tmp_path / "run" / "best.pt", "vgg16-unet")
    tiny = synthesize_dataset("mixed", 1, tmp_path / "tiny", seed=1, size=64)
    with pytest.raises(CscError, match="cannot be split"):
        run_base(tiny, tmp_path / "r2", cfg())



@pytest.mark.parametrize("option", [dict(lr=float("nan")), dict(lr=-1e-3), dict(lr=float("inf")), dict(size=0),
                                    dict(size=-64), dict(seed=-1)], ids=str)
def test_absurd_numbers_are_refused_by_the_config(option):
    """Adam and NumPy refused these only once the data was loaded and the progress bar shown, with a traceback
    (an infinite rate trained a step, then stopped on a NaN loss); a size of 0 or -64 is a multiple of 32."""
    with pytest.raises(ValueError, match=f"--{next(iter(option))}"):
        cfg(**option)


def test_cli_nan_learning_rate_is_one_line_before_training(mixed, tmp_path):
    run = _csc_train("base", str(mixed), "--out", str(tmp_path / "run"), "--arch", "light-unet", "--size", "64",
                     "--device", "cpu", "--lr", "nan")
    _one_line_before_any_progress(run, "--lr must be a finite number of at least 0, got nan")
    assert not (tmp_path / "run").exists()

class _Pickled:
    """Not a tensor or a plain container: only an unsafe (full-pickle) load could read a file holding one."""


@pytest.mark.parametrize("write", [
    lambda p: p.write_bytes(b"not a checkpoint"),
    lambda p: p.write_bytes(b""),
    lambda p: torch.save({"model": _Pickled()}, p),
    lambda p: torch.save(torch.nn.Linear(2, 2), p),
    lambda p: torch.save({"weights": torch.zeros(2)}, p),
], ids=["junk", "empty", "pickled-object", "pickled-module", "foreign-state-dict"])
def test_a_file_that_is_not_a_checkpoint_says_so_and_never_advises_the_unsafe_load(tmp_path, write, capfd):
    path = tmp_path / "other.pt"
    write(path)
    with pytest.raises(CscError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not an auto-CSC checkpoint") and "\n" not in message
    assert "weights_only" not in message and "weights_only" not in capfd.readouterr().err


def test_dataset_with_class_ids_beyond_the_model(tmp_path):
    import cv2

    data = synthesize_dataset("mixed", 4, tmp_path / "d", seed=1, size=64)
    (data / "dataset.json").write_text(json.dumps({"classes": ["background", "rbc", "macrophage", "platelet"]}))
    mask_path = sorted((data / "masks").iterdir())[0]
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    mask[:4, :4] = 3
    cv2.imwrite(str(mask_path), mask)
    with pytest.raises(CscError, match="class id 3 but the model has 3 classes"):
        from runtime.data.dataset import open_dataset
        from trainer.data import CropSampler

        CropSampler([(open_dataset(data), [0, 1, 2, 3])], 64, n_classes=3)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(mixed, tmp_path):
    with pytest.raises(TrainingDiverged, match="last.pt keeps the last good state"):
        run_base(mixed, tmp_path / "run", cfg(steps=6, val_every=1, lr=1e30))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert 1 <= state["step"] < 6 and all(np.isfinite(state["history"]["loss"]))


def test_nan_loss_before_the_first_checkpoint_does_not_point_to_a_last_pt(mixed, tmp_path):
    """It said "RUN/last.pt keeps the last good state — … or resume from last.pt" with no last.pt written."""
    with pytest.raises(TrainingDiverged, match="before the first checkpoint") as err:
        run_base(mixed, tmp_path / "run", cfg(steps=6, val_every=5, lr=1e30))
    assert "last.pt" not in str(err.value) and not (tmp_path / "run" / "last.pt").exists()


def test_ddp_two_cpu_processes_agree(mixed, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trainer.cli.train", "base", str(mixed), "--out", str(tmp_path / "ddp"), "--arch", "light-unet",
           "--steps", "3", "--batch", "2", "--size", "64", "--val-every", "3", "--device", "cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[:4000] + " … " + run.stderr[-1000:]  # the ranks' own errors come first
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["ddp"] == {"world_size": 2, "ranks_agree": True}


def test_training_under_torchrun_destroys_the_process_group_it_made_on_every_way_out(mixed, tmp_path, monkeypatch):
    """A rank that leaves its Gloo group to the interpreter's exit can abort there (SIGABRT): `train` destroys the
    group it made, after a finished run and after an error, and leaves alone a group its caller made. A real Gloo
    group of one process stands in for torchrun's (WORLD_SIZE says 2, so `train` takes its distributed path)."""
    import torch.distributed as dist

    init = dist.init_process_group

    def one_process_group(backend):
        init(backend="gloo", store=dist.HashStore(), rank=0, world_size=1)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("trainer.train.dist.init_process_group", one_process_group)
    plan = plan_base(mixed, cfg(steps=2, val_every=2))
    assert plan.run(tmp_path / "done")["ddp"]["ranks_agree"] and not dist.is_initialized()
    with pytest.raises(TrainingDiverged):
        run_base(mixed, tmp_path / "diverged", cfg(steps=6, val_every=1, lr=1e30))
    assert not dist.is_initialized()
    one_process_group("gloo")
    try:
        plan.run(tmp_path / "caller")
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_cli_eval_and_models_contracts(mixed, tmp_path):
    from typer.testing import CliRunner

    from trainer.cli.train import app

    runner = CliRunner()
    run = tmp_path / "r[" / "un]"  # reads as markup: printed as it is, not as a closing tag
    result = runner.invoke(app, ["base", str(mixed), "--out", str(run), "--arch", "light-unet",
                                 "--steps", "2", "--batch", "2", "--size", "64", "--val-every", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("best.pt", "last.pt", "metrics.json", "curves.png"):
        assert (run / name).exists()
    again = runner.invoke(app, ["base", str(mixed), "--out", str(run), "--arch", "light-unet", "--steps", "2",
                                "--size", "64"])
    assert again.exit_code != 0 and "already holds a checkpoint" in str(again.exception)
    result = runner.invoke(app, ["eval", str(run / "best.pt"), str(mixed), "--json", str(tmp_path / "e[" / "x].json")])
    assert result.exit_code == 0, result.output
    assert "".join(f"wrote {tmp_path}/e[/x].json".split()) in "".join(result.output.split()), result.output
    data = json.loads((tmp_path / "e[" / "x].json").read_text())
    assert {"miou", "fwiou", "dice", "per_class_iou", "counts"} <= set(data)
    assert set(data["per_class_iou"]) == {"background", "rbc", "macrophage"}
    assert set(data["counts"]["count_accuracy"]) == {"rbc", "macrophage"}
    # --json onto the dataset's own description or onto the checkpoint: refused before the evaluation, not replaced
    described, weights = (Path(mixed) / "dataset.json").read_bytes(), (run / "best.pt").read_bytes()
    for target, reason in ((Path(mixed) / "dataset.json", "among the dataset's own files"),
                           (run / "best.pt", "--json and CHECKPOINT name the same file")):
        refused = runner.invoke(app, ["eval", str(run / "best.pt"), str(mixed), "--json", str(target)])
        assert isinstance(refused.exception, CscError) and reason in str(refused.exception), refused.output
    assert (Path(mixed) / "dataset.json").read_bytes() == described
    assert (run / "best.pt").read_bytes() == weights
    # A set of a known other scale is segmented at the model's, scored at its own pixels
    from runtime.data.rescale import rescale_dataset

    rescale_dataset(mixed, tmp_path / "fine", 0.2)
    result = runner.invoke(app, ["eval", str(run / "best.pt"), str(tmp_path / "fine"), "--json",
                                 str(tmp_path / "fine.json")], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "segmented at the model's 0.4 µm/px (×0.5)" in result.output, result.output
    fine = json.loads((tmp_path / "fine.json").read_text())
    assert fine["zoom"] == 0.5 and data["zoom"] == 1.0
    assert abs(fine["miou"] - data["miou"]) < 0.05, "the same predictions, scored at twice the pixels"
    empty = synthesize_dataset("mixed", 1, tmp_path / "empty", seed=1, size=64, density=0)  # no cell to count
    result = runner.invoke(app, ["eval", str(run / "best.pt"), str(empty)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "count accuracy: — (no annotated cell of any class)" in result.output, \
        result.output
    models = runner.invoke(app, ["models"])
    assert models.exit_code == 0 and "vgg16-unet" in models.output and "503.5" in models.output


def _csc_train(*args):
    return subprocess.run([sys.executable, "-c", "from trainer.cli.train import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def _one_line_before_any_progress(run, message):
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith("error:") and message in lines[0], run.stderr
    assert not (run.stdout.strip() or "U-Single" in run.stderr), "no progress bar before the arguments are checked"


def test_cli_bad_device_fails_with_one_line_and_no_progress(mixed, tmp_path):
    run = _csc_train("single", str(mixed), str(mixed), "--out", str(tmp_path / "run"), "--arch", "light-unet",
                     "--device", "tpu")
    _one_line_before_any_progress(run, "'tpu' is not one of 'auto', 'cpu', 'cuda'")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_cli_cuda_without_a_gpu_is_refused_before_training_starts(mixed, tmp_path):
    run = _csc_train("single", str(mixed), str(mixed), "--out", str(tmp_path / "run"), "--arch", "light-unet",
                     "--device", "cuda", "--size", "64")
    _one_line_before_any_progress(run, "--device cuda but PyTorch sees no CUDA GPU")


def test_cli_missing_dataset_or_checkpoint_is_refused_before_training_starts(mixed, tmp_path):
    run = _csc_train("single", str(mixed), str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--arch",
                     "light-unet", "--size", "64", "--device", "cpu")
    _one_line_before_any_progress(run, "dataset folder not found")
    run = _csc_train("single", str(mixed), str(mixed), "--out", str(tmp_path / "run"), "--arch", "light-unet",
                     "--size", "64", "--device", "cpu", "--resume")
    _one_line_before_any_progress(run, "nothing to resume")


def test_cli_resume_of_another_run_is_refused_before_training_starts(mixed, tmp_path):
    """A last.pt of other settings was refused only after the progress bar had started."""
    run_base(mixed, tmp_path / "run", cfg(steps=2))
    run = _csc_train("base", str(mixed), "--out", str(tmp_path / "run"), "--arch", "light-unet", "--size", "128",
                     "--batch", "2", "--steps", "4", "--val-every", "2", "--device", "cpu", "--resume")
    _one_line_before_any_progress(run, "--resume with other settings than the run it continues: size 64 → 128")



@pytest.mark.parametrize("where", ["file", "inside-file", "read-only"])
def test_cli_out_that_cannot_hold_the_checkpoints_is_refused_before_training(mixed, tmp_path, where, monkeypatch):
    """A file as --out, a folder under a file, or one not writable failed only at the first checkpoint, after the
    training steps before it (the whole run with the default --val-every 200 on a short one)."""
    from typer.testing import CliRunner

    from trainer.cli import train as cli

    blocker = tmp_path / "taken"
    blocker.write_text("not a run")
    out = {"file": blocker, "inside-file": blocker / "run", "read-only": tmp_path / "ro" / "run"}[where]
    if where == "read-only":  # chmod binds no root user (CI's containers): the permission is what os.access says
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real_access(p, mode, **kw))
    monkeypatch.setattr(cli, "progress_bar", lambda: pytest.fail("training started"))
    result = CliRunner().invoke(cli.app, ["base", str(mixed), "--out", str(out), "--arch", "light-unet", "--steps", "1",
                                          "--batch", "2", "--size", "64", "--device", "cpu"])
    message = {"file": "--out is a file", "inside-file": "--out lies inside a file",
               "read-only": "cannot write here (permission denied)"}[where]
    assert isinstance(result.exception, CscError) and message in str(result.exception), result.output
    assert blocker.read_text() == "not a run"


def test_cli_out_inside_the_data_or_onto_the_starting_checkpoint_is_refused(tmp_path, monkeypatch):
    """--out DATA/images trained, then left curves.png there: an image without a mask, so the dataset no longer
    opened; U-Transfer with --out the folder of its U-Single best.pt (no last.pt beside it) replaced that model."""
    from typer.testing import CliRunner

    from runtime.data.dataset import open_dataset
    from trainer.checkpoint import save_checkpoint
    from trainer.cli import train as cli
    from trainer.models import build_model

    data = synthesize_dataset("mixed", 4, tmp_path / "data", seed=1, size=64)
    monkeypatch.setattr(cli, "progress_bar", lambda: pytest.fail("training started"))
    common = ["--steps", "1", "--batch", "2", "--size", "64", "--device", "cpu"]
    for out in (data, data / "images"):
        result = CliRunner().invoke(cli.app, ["base", str(data), "--out", str(out), "--arch", "light-unet", *common])
        assert "--out lies inside a training dataset" in str(result.exception), result.output
    assert len(open_dataset(data)) == 4
    start = tmp_path / "single" / "best.pt"
    save_checkpoint(start, {"arch": "light-unet", "classes": ["background", "rbc", "macrophage"], "config": {},
                            "model": build_model("light-unet").state_dict()})
    before = start.read_bytes()
    result = CliRunner().invoke(cli.app, ["transfer", str(start), str(data), "--n", "1", "--out", str(start.parent),
                                          *common])
    assert "best.pt and CHECKPOINT name the same file" in str(result.exception), result.output
    assert start.read_bytes() == before


def test_a_run_folder_holding_only_best_pt_is_not_trained_over(tmp_path):
    """A finished run kept without its last.pt (the optimizer state makes it the larger file) had its best.pt
    replaced by a new run into the same --out."""
    from trainer.regimes import check_run_folder

    (tmp_path / "best.pt").write_bytes(b"a kept model")
    with pytest.raises(CscError, match="already holds a checkpoint"):
        check_run_folder(tmp_path, resume=False)
    with pytest.raises(CscError, match="nothing to resume"):
        check_run_folder(tmp_path, resume=True)


CTRL_C_AT_STEP = """
import os, signal, sys
from trainer.cli.train import main
from trainer.data import CropSampler

batch = CropSampler.batch


def ctrl_c_at(self, seed, step, *args):
    if step == int(os.environ["CTRL_C_AT"]):
        os.kill(os.getpid(), signal.SIGINT)
    return batch(self, seed, step, *args)


CropSampler.batch = ctrl_c_at
sys.argv[0] = "csc-train"
main()
"""


@pytest.mark.parametrize("at", [1, 3])
def test_cli_ctrl_c_says_what_last_pt_holds_and_exits_130(mixed, tmp_path, at):
    """Ctrl-C ended the run with exit 130 and not a word: whether --resume had a checkpoint to continue from, and
    from which step, was left to guess."""
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-c", CTRL_C_AT_STEP, "base", str(mixed), "--out", str(out), "--arch",
                          "light-unet", "--steps", "6", "--batch", "2", "--size", "64", "--val-every", "2", "--device",
                          "cpu"], capture_output=True, text=True, timeout=300, env={**os.environ, "CTRL_C_AT": str(at)})
    printed = " ".join(run.stderr.split())
    assert run.returncode == 130 and "Traceback" not in run.stderr, run.stderr
    if at == 1:
        assert "interrupted: at step 1 of 6; no checkpoint written yet" in printed, run.stderr
        assert not out.exists()
    else:
        assert f"interrupted: at step 3 of 6; {out / 'last.pt'} holds step 2" in printed, run.stderr
        assert "--resume continues" in printed and load_checkpoint(out / "last.pt")["step"] == 2
        assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left

def test_cli_help_lists_the_choices():
    from typer.testing import CliRunner

    from trainer.cli.train import app
    from trainer.models import available

    text = " ".join(CliRunner().invoke(app, ["single", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "auto|cpu|cuda" in text and "|".join(available()) in text


def test_microscope_augmentation_and_touching_gaps(tmp_path):
    """The microscope set changes colour, light and focus of the image but never the mask, stays seeded, and a
    2-px gap separates touching instances in the training masks."""
    import cv2
    import numpy as np

    from runtime.data.dataset import DatasetWriter, open_dataset
    from trainer.data import AUGMENTS, CropSampler

    mask = np.zeros((96, 96), np.uint8)
    instances = np.zeros((96, 96), np.uint16)
    cv2.circle(instances, (36, 48), 14, 1, -1)
    cv2.circle(instances, (62, 48), 14, 2, -1)  # overlapping: one blob in the class map
    mask[instances > 0] = 1
    image = np.full((96, 96, 3), 200, np.uint8)
    image[mask > 0] = (150, 100, 170)
    with DatasetWriter(tmp_path / "d", source="test") as writer:
        writer.add("a", image, mask, instances)
    dataset = open_dataset(tmp_path / "d")
    plain = CropSampler([(dataset, [0])], 64, AUGMENTS["paper"])
    micro = CropSampler([(dataset, [0])], 64, AUGMENTS["microscope"], touching_gap=2)
    assert cv2.connectedComponents(plain.pools[0][0].mask)[0] - 1 == 1
    assert cv2.connectedComponents(micro.pools[0][0].mask)[0] - 1 == 2, "the gap separates the two cells"
    assert micro.class_fractions[1] == pytest.approx((micro.pools[0][0].mask == 1).mean())
    images, masks = micro.batch(seed=3, step=0, batch=6)
    again, _ = micro.batch(seed=3, step=0, batch=6)
    assert np.array_equal(images, again), "seeded"
    assert set(np.unique(masks)) <= {0, 1}
    # The paper's grey-value changes keep a cell's hue; the stain augmentation moves it.
    def hue_spread(sampler):
        crops = zip(*sampler.batch(seed=1, step=0, batch=8))
        shares = [im[m > 0].astype(float).mean(0) for im, m in crops if (m > 0).sum() > 50]
        return np.std([c[0] / c.sum() for c in shares])

    assert hue_spread(micro) > 3 * hue_spread(plain)


def test_single_refuses_sets_of_different_given_pixel_sizes(tmp_path):
    """Cells of one kind must have one size in pixels for one model: sets whose pixel sizes were given and
    differ are refused with the rescale command; estimated ones (auto-labels without a scale) are not compared."""
    import json as _json

    from runtime.errors import CscError
    from runtime.data.rescale import rescale_dataset
    from runtime.data.synthesize import synthesize_dataset
    from trainer.regimes import plan_single
    from trainer.train import TrainConfig

    rbc = synthesize_dataset("rbc", 3, tmp_path / "rbc", seed=1, size=64)
    mac = synthesize_dataset("macrophage", 3, tmp_path / "mac", seed=1, size=64)
    rescale_dataset(mac, tmp_path / "mac2", 0.2)
    config = TrainConfig(regime="U-Single", arch="light-unet", steps=1, size=64, device="cpu")
    with pytest.raises(CscError, match="csc-data rescale"):
        plan_single(rbc, tmp_path / "mac2", config)
    meta = _json.loads((tmp_path / "mac2" / "dataset.json").read_text())
    meta["scale"] = "estimated"
    (tmp_path / "mac2" / "dataset.json").write_text(_json.dumps(meta))
    assert plan_single(rbc, tmp_path / "mac2", config).config.pixel_size_um == 0.4


def test_the_optics_of_the_training_data_are_recorded_through_every_stage(tmp_path):
    """The runtime warns when frames come from other optics than the model learnt (runtime/pipeline/domain.py): each plan
    records the optics its datasets say they hold, and U-Transfer keeps those of its starting checkpoint."""
    from trainer.regimes import plan_single, plan_transfer

    rbc = synthesize_dataset("rbc", 3, tmp_path / "rbc", seed=1, size=64, optics="dic")
    mac = synthesize_dataset("macrophage", 3, tmp_path / "mac", seed=2, size=64, optics="phase")
    plan = plan_single(rbc, mac, cfg(regime="U-Single", steps=1, val_every=1))
    assert plan.config.modalities == ("dic", "phase")
    plan.run(tmp_path / "single")
    mixed = synthesize_dataset("mixed", 12, tmp_path / "mixed", seed=3, size=64)  # stained by default
    transfer = plan_transfer(tmp_path / "single" / "best.pt", mixed, 2, cfg(regime="U-Transfer", steps=1))
    assert transfer.config.modalities == ("dic", "phase", "stained")
