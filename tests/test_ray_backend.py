"""``emolens run --backend ray``: (model, stage) Ray tasks on a local 2-worker cluster give the local tables."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest

from emolens.errors import EmolensError
from emolens.study import runner
from emolens.study.config import config_from_dict

STUDY = {
    "name": "raytiny",
    "models": ["tiny:llama", "tiny:qwen2"],
    "dataset": {"spec": "stimuli", "limit": 26, "seed": 0},
    "stages": ["readout", "extract", "probe", "ablate"],
    "probe": {"n_boot": 20, "human_baseline": False},
    "ablate": {"spans": [1], "kinds": ["zero"], "max_items": 8},
    "batch_size": 16,
    "device": "cpu",
}
TABLES = {"readout": "readout.parquet", "probe": "probes.parquet", "ablate": "ablation.parquet"}


def quiet(*_args, **_kwargs) -> None:
    pass


def study(root: Path, **changes):
    return config_from_dict({**STUDY, **changes, "output": str(root)}, "raytiny.yaml")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster with 2 CPU slots (two worker processes at a time) for the whole module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'emolens[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def both_runs(ray_cluster, tmp_path_factory):
    local = runner.run_study(study(tmp_path_factory.mktemp("local")), progress=False, echo=quiet, report=False)
    lines: list[str] = []
    remote = runner.run_study(study(tmp_path_factory.mktemp("ray")), progress=False, echo=lines.append,
                                backend="ray")
    return local, remote, lines


def test_ray_run_equals_local_run(both_runs):
    local, remote, lines = both_runs
    assert any("ray: existing Ray session, 2 CPU, 0 GPU" in line for line in lines)
    assert [(o.model, o.stage, o.status) for o in remote.outcomes] == \
           [(o.model, o.stage, "done") for o in local.outcomes]
    assert {o.status for o in local.outcomes} == {"done"}
    assert remote.run_dir.name == local.run_dir.name  # same study, same folder name, other root
    for slug in ("tiny-llama", "tiny-qwen2"):
        for name in STUDY["stages"]:
            a = json.loads((local.run_dir / slug / name / "stage.json").read_text())
            b = json.loads((remote.run_dir / slug / name / "stage.json").read_text())
            assert a["key"] == b["key"] and b["status"] == "done"  # same content addresses
        for name, table in TABLES.items():
            # the workers run torch with one thread, this process with two: last-bit float differences only
            pd.testing.assert_frame_equal(pd.read_parquet(remote.run_dir / slug / name / table),
                                          pd.read_parquet(local.run_dir / slug / name / table),
                                          check_exact=False, rtol=1e-5, atol=1e-6)
        a = pd.read_parquet(local.run_dir / slug / "readout/readout.parquet")
        b = pd.read_parquet(remote.run_dir / slug / "readout/readout.parquet")
        assert (a.pred == b.pred).all()
        store = remote.run_dir / slug / "extract/store"
        assert (store / "manifest.json").exists() or any(store.iterdir())
    meta = json.loads((remote.run_dir / "run.json").read_text())
    assert meta["models"]["tiny-qwen2"]["n_layers"] == 3 and "source_id" in meta["models"]["tiny-llama"]
    assert {s["status"] for m in meta["stages"].values() for s in m.values()} == {"done"}
    assert (remote.run_dir / "report.html").exists()


def test_ray_rerun_is_cached_and_changed_value_reuses(both_runs, tmp_path):
    _, remote, _ = both_runs
    again = runner.run_study(study(remote.run_dir.parent), progress=False, echo=quiet, report=False,
                               backend="ray")
    assert again.run_dir == remote.run_dir and {o.status for o in again.outcomes} == {"cached"}
    changed = runner.run_study(study(remote.run_dir.parent, probe={"n_boot": 20, "human_baseline": False,
                                                                     "C": 0.5}),
                                 progress=False, echo=quiet, report=False, backend="ray")
    got = {(o.model, o.stage): o.status for o in changed.outcomes}
    assert got[("tiny-llama", "readout")] == "reused" and got[("tiny-qwen2", "extract")] == "reused"
    assert got[("tiny-llama", "probe")] == "done" and got[("tiny-qwen2", "ablate")] == "reused"


def test_ray_failed_stage_skips_its_dependents(ray_cluster, tmp_path):
    """A stage that fails on a worker is recorded; the stages needing it are skipped, the others run."""
    cfg = study(tmp_path, models=["tiny:llama"], layers=[7])  # the tiny model has 3 layers: extract fails
    result = runner.run_study(cfg, progress=False, echo=quiet, report=False, backend="ray")
    got = {o.stage: o.status for o in result.outcomes}
    assert got == {"readout": "done", "extract": "failed", "probe": "skipped", "ablate": "done"}
    assert "out of range" in (result.run_dir / "tiny-llama/extract/error.txt").read_text()
    assert "out of range" in next(o.note for o in result.outcomes if o.stage == "extract")


# ------------------------------------------------------------------------------- bad input


def test_ray_not_installed_is_one_line_exit_2(monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, out, err = run_cli(["run", "--backend", "ray", "--no-progress"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "needs Ray, which is not installed" in lines[0] and "emolens[ray]" in lines[0]
    assert out == ""


def test_unreachable_ray_address_is_one_line_exit_2(run_cli):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'emolens[ray]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli(["run", "--backend", "ray", "--ray-address", f"127.0.0.1:{port}", "--no-progress"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in lines[0]
    code, _, err = run_cli(["run", "--ray-address", "127.0.0.1:1", "--no-progress"])
    assert code == 2 and "only apply to --backend ray" in err
    with pytest.raises(EmolensError, match="bad Ray address"):
        from emolens.study.ray_backend import _check_reachable

        _check_reachable("nonsense")
