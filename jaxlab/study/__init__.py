"""Backbone x optimizer x hyperparameter studies (the coupling study of arXiv 2410.06373).

    python -m jaxlab.study --config=configs/bocb/mini_digits.py --workdir=DIR
    python -m jaxlab.study.report --workdir=DIR

spec.py (config -> cells) → groups.py (cells -> one program per group) → engine.py (the vmapped,
sharded program of a group) → runner.py (resumable loop, tables) → analysis.py / spectra.py /
plots.py / report.py (measures, figures, Markdown). See docs/study.md.
"""

from jaxlab.study.runner import run_study
from jaxlab.study.spec import Cell, cell_config, cells

__all__ = ["Cell", "cell_config", "cells", "run_study"]
