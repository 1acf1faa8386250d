"""The report stage, once across the units: OUT/report.md (`randsae.study.report`), OUT/report.html
(`randsae.study.page`) and OUT/figures."""

import logging
from pathlib import Path

from randsae import io
from randsae.study.plan import fixed_cost
from randsae.study.records import Stage, StudyState

log = logging.getLogger(__name__)


def run(study: StudyState, _: str) -> None:
    write_report(study.out)


def write_report(out: Path) -> tuple[Path, Path]:
    """OUT/report.md and OUT/report.html from what the study wrote."""
    from randsae.study.page import page
    from randsae.study.report import Study, copy_figures, markdown

    study = Study(out)
    figures = copy_figures(out)
    io.atomic_write(out / "report.md", lambda p: p.write_text(markdown(study, figures)))
    io.atomic_write(out / "report.html", lambda p: p.write_text(page(study, figures)))
    log.info("wrote %s and %s", out / "report.md", out / "report.html")
    return out / "report.md", out / "report.html"


SECONDS = 2.0  # the plan's allowance for the report (not measured)

STAGE = Stage("report", run, cost=fixed_cost("report", SECONDS), reads=("compare",), per_unit=False)
