"""The study's opt-in ``neurons`` stage and its report section, on a tiny model and the built-in stimuli."""

from __future__ import annotations

import pandas as pd
import pytest

from emolens.study import runner
from emolens.study.config import config_from_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(*_args, **_kwargs) -> None:
    pass


def test_neurons_stage_writes_tables_and_report_section(tmp_path):
    cfg = config_from_dict({
        "name": "nr", "models": ["tiny:llama"], "dataset": {"spec": "stimuli", "limit": 60, "seed": 0},
        "stages": ["neurons"], "batch_size": 16, "output": str(tmp_path),
        "neurons": {"appraisals": ["pleasantness", "other_responsblt", "self_responsblt"], "probe_layers": [1],
                    "ks": [1, 4], "ablate": ["other_responsblt"], "ablate_k": 4, "random_sets": 2,
                    "ablation_items": 5, "pairs": False},
    }, "test.yaml")
    assert "neurons" not in config_from_dict({"output": str(tmp_path)}, "d.yaml").stages  # opt-in
    result = runner.run_study(cfg, progress=False, echo=quiet)
    assert {o.stage: o.status for o in result.outcomes} == {"neurons": "done"}
    folder = result.run_dir / "tiny-llama" / "neurons"
    table = pd.read_parquet(folder / "neurons.parquet")
    assert len(table) == 3 * 128 * 3 and (folder / "sparse.parquet").exists() and (folder / "ablation.parquet").exists()
    html = (result.run_dir / "report.html").read_text()
    assert "Appraisal neurons" in html and "Top neurons" in html and "Mean ablation vs matched random sets" in html
    assert "Held-out R² of sparse" in html and "r2_lo" in html
