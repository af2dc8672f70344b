"""Report section: the control study (replies to sensitive messages, steered vs instructed vs clean)."""

from __future__ import annotations

from emolens.report.control_section import control_section
from emolens.report.page import absent
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section


@section("control", "Controllable replies in sensitive contexts", 80)
def control_report_section(mr: ModelRun) -> str:
    ok, why = mr.stage_status("control")
    if not ok:
        return absent(f"No control study: {why}.")
    return control_section(mr.run_dir / mr.slug / "control")
