"""Every notebook in notebooks/ runs top to bottom (tiny settings), and is committed without outputs.

The tiny settings replace the notebook's `parameters` cell the way papermill does: a cell assigning
them is inserted right after it. The kernel inherits this process's environment (conftest: 8
simulated CPU devices, the session's TFDS data dir), like a Colab TPU runtime with 8 devices.
"""

from __future__ import annotations

import ast
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COLAB = "https://colab.research.google.com/github/ORG/jaxlab/blob/main/notebooks/"

# Per notebook: values for names its `parameters` cell assigns. "{tmp}" becomes a fresh directory.
TINY = {
    "quickstart": {"total_steps": 12, "eval_every_steps": 6, "workdir": "{tmp}/quickstart"},
    "sema": {"total_steps": 24, "eval_every_steps": 12},
    "coupling_study": {"backbones": ("small_cnn",), "optimizers": ("sgd", "adamw"),
                       "full_lr_grid": False, "total_steps": 4, "workdir": "{tmp}/study"},
    "tokenizer_to_generator": {"tokenizer_steps": 4, "adversarial": False, "maskgit_steps": 4,
                               "diffusion_steps": 4, "diffusion_model": "dit", "sampler_steps": (4,),
                               "workdir": "{tmp}/tokenizer_to_generator"},
}


def _parameters_cell(notebook) -> int:
  found = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
  assert len(found) == 1, f"expected one cell tagged 'parameters', found {len(found)}"
  return found[0]


def _assigned_names(source: str) -> set[str]:
  return {target.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
          for target in node.targets if isinstance(target, ast.Name)}


def test_notebooks_exist():
  assert {"quickstart", "sema", "coupling_study", "tokenizer_to_generator"} <= {path.stem for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_opens_in_colab(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: strip them"
  first = notebook.cells[0]
  assert first.cell_type == "markdown" and f"{COLAB}{path.name}" in first.source, "Colab badge"
  install = next(c for c in notebook.cells if c.cell_type == "code")
  assert 'find_spec("jaxlab") is None' in install.source, "install cell must do nothing when jaxlab imports"
  assert "git+https://github.com/ORG/jaxlab" in install.source
  assert "**Runtime:**" in first.source, "say which Colab runtime suits the notebook"
  _parameters_cell(notebook)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path):
  assert path.stem in TINY, f"add tiny settings for {path.name} to TINY in {pathlib.Path(__file__).name}"
  notebook = nbformat.read(path, as_version=4)
  index = _parameters_cell(notebook)
  tiny = TINY[path.stem]
  unknown = set(tiny) - _assigned_names(notebook.cells[index].source)
  assert not unknown, f"{path.name}'s parameters cell does not assign {sorted(unknown)}"
  overrides = "\n".join(f"{name} = {str(value).format(tmp=tmp_path)!r}" if isinstance(value, str)
                        else f"{name} = {value!r}" for name, value in tiny.items())
  injected = nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]})
  notebook.cells.insert(index + 1, injected)
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the cell and its traceback
  errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors
  images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert images, f"{path.name} drew no plot"
