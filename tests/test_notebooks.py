"""Every notebook in notebooks/ runs top to bottom (tiny settings), and is committed without outputs.

The tiny settings replace the notebook's `parameters` cell the way papermill does: a cell assigning
them is inserted right after it. The kernel inherits this process's environment (conftest: 8
simulated CPU devices, the session's TFDS data dir), like a Colab TPU runtime with 8 devices.

Each notebook opens with a Colab badge and the same install cells, pointing at the repository that
setup.cfg's `url` declares (scripts/set_repo_url.py writes them); the install cell is run here with
pip stubbed out, on a fresh Colab runtime (TensorFlow preinstalled), inside a clone and elsewhere.
"""

from __future__ import annotations

import ast
import configparser
import glob
import importlib.metadata
import importlib.util
import pathlib
import re
import shutil
import subprocess

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("set_repo_url", ROOT / "scripts" / "set_repo_url.py")
set_repo_url = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(set_repo_url)
URL = set_repo_url.repo_url()  # setup.cfg's [metadata] url
# Distributions that install the `tensorflow` package itself: two of them overwrite each other.
TF_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
                    "tensorflow-aarch64", "tensorflow-cpu-aws", "intel-tensorflow", "tf-nightly",
                    "tf-nightly-cpu", "tf-nightly-gpu"}
# What Orbax logs when a read-only reader meets an item it has no handler for: expected, and silenced.
ORBAX_WARNING = "was found in the checkpoint, but could not be restored"

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


def _name(requirement: str) -> str:
  return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _setup_cfg() -> configparser.ConfigParser:
  parser = configparser.ConfigParser(interpolation=None)
  parser.read(ROOT / "setup.cfg")
  return parser


def _requirements(value: str) -> list[str]:
  """A setup.cfg list of requirements, without its comments."""
  return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def _minutes(text: str) -> list[str]:
  """Every duration stated in `text` ('about 3 minutes', '384 s', '15–20 min', 'an hour')."""
  return re.findall(r"\b\d+(?:[–-]\d+)?\s*(?:minutes?|min|seconds?|s|hours?|h)\b|\ban? (?:minute|hour)\b", text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_opens_in_colab(path):
  text = path.read_text()
  notebook = nbformat.reads(text, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: strip them"
  first, _, install = notebook.cells[:3]
  assert first.cell_type == "markdown" and set_repo_url.badge_link(URL, path.name) in first.source, "Colab badge"
  assert install.cell_type == "code" and f'JAXLAB_REPO = "{URL}"' in install.source.splitlines()
  assert 'find_spec("jaxlab") is None' in install.source, "install cell must do nothing when jaxlab imports"
  # Badge, install note and install cell are exactly what the script writes for setup.cfg's url.
  rewritten = set_repo_url.updated(nbformat.reads(text, as_version=4), path.name, URL)
  assert nbformat.writes(rewritten) + "\n" == text, "run python scripts/set_repo_url.py"
  _parameters_cell(notebook)


def test_repository_is_declared_once_in_setup_cfg():
  assert URL == _setup_cfg().get("metadata", "url")
  assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", URL)
  owner_name = URL.removeprefix("https://github.com/")
  for path in [*NOTEBOOKS, ROOT / "notebooks" / "README.md"]:
    text = path.read_text()
    assert "/ORG/" not in text, f"{path.name} still has the ORG placeholder"
    # Every GitHub repository the notebooks name is jaxlab's (other projects are cited otherwise).
    named = set(re.findall(r"(?:github\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)", text))
    assert named <= {owner_name}, f"{path.name} names {sorted(named - {owner_name})}, not setup.cfg's {URL}"


def _run_install_cell(monkeypatch, cwd, *, importable=(), gpu=False, repo=URL, requires=()) -> list[list[str]]:
  """Executes the install cell with pip, the accelerator probes and find_spec stubbed; returns the
  arguments of every `pip install -q` it ran."""
  calls = []
  real_find_spec = importlib.util.find_spec

  def find_spec(name, *args, **kwargs):
    if name in ("jaxlab", "tensorflow"):
      return object() if name in importable else None
    return real_find_spec(name, *args, **kwargs)

  def run(command, **kwargs):
    assert command[1:5] == ["-m", "pip", "install", "-q"] and kwargs.get("check") is True, command
    calls.append(command[5:])

  monkeypatch.setattr(importlib.util, "find_spec", find_spec)
  monkeypatch.setattr(subprocess, "run", run)
  monkeypatch.setattr(glob, "glob", lambda pattern: [])  # no TPU
  monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if gpu else None)
  monkeypatch.setattr(importlib.metadata, "requires", lambda name: list(requires) if name == "jaxlab" else None)
  monkeypatch.chdir(cwd)
  cell = compile(set_repo_url.install_cell(repo), "install-cell", "exec")
  exec(cell, {"__name__": "install_cell"})  # pylint: disable=exec-used
  return calls


def _fake_clone(root: pathlib.Path) -> pathlib.Path:
  (root / "notebooks").mkdir(parents=True)
  (root / "setup.cfg").write_text("[metadata]\nname = jaxlab\nurl = https://github.com/someone/jaxlab\n")
  return root


def test_install_cell_does_nothing_where_jaxlab_imports(monkeypatch, tmp_path):
  assert _run_install_cell(monkeypatch, tmp_path, importable=("jaxlab",)) == []


def test_install_cell_installs_from_the_repository_url(monkeypatch, tmp_path):
  assert _run_install_cell(monkeypatch, tmp_path) == [[f"jaxlab @ git+{URL}"]]
  assert _run_install_cell(monkeypatch, tmp_path, gpu=True) == [[f"jaxlab @ git+{URL}", "jax[cuda12]"]]
  fork = "https://github.com/someone/jaxlab"
  assert _run_install_cell(monkeypatch, tmp_path, repo=fork) == [[f"jaxlab @ git+{fork}"]]


def test_install_cell_installs_a_local_clone(monkeypatch, tmp_path):
  clone = _fake_clone(tmp_path / "clone")
  # Opened inside the clone (Jupyter's working directory is the notebook's).
  assert _run_install_cell(monkeypatch, clone / "notebooks") == [["-e", str(clone)]]
  # JAXLAB_REPO set to a clone's path.
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  assert _run_install_cell(monkeypatch, elsewhere, repo=str(clone)) == [["-e", str(clone)]]
  # A directory whose setup.cfg is another project's is not a clone.
  other = tmp_path / "other"
  (other / "notebooks").mkdir(parents=True)
  (other / "setup.cfg").write_text("[metadata]\nname = jaxlab-tools\n")
  assert _run_install_cell(monkeypatch, other / "notebooks") == [[f"jaxlab @ git+{URL}"]]


def test_install_cell_keeps_a_preinstalled_tensorflow(monkeypatch, tmp_path):
  """Colab preinstalls `tensorflow`: jaxlab goes in without dependencies, then every requirement
  of it except the TensorFlow distribution, which would be a second one of the same package."""
  options = _setup_cfg()["options"]
  required = _requirements(options["install_requires"])
  metadata = [*required, 'pytest>=8; extra == "test"', 'tensorflow>=2.18; extra == "gpu"']
  calls = _run_install_cell(monkeypatch, tmp_path, importable=("tensorflow",), gpu=True, requires=metadata)
  assert calls[0] == ["--no-deps", f"jaxlab @ git+{URL}"]
  assert calls[1][-1] == "jax[cuda12]"
  installed = calls[1][:-1]
  assert not {_name(r) for r in installed} & TF_DISTRIBUTIONS, installed
  assert installed == [r for r in required if _name(r) not in TF_DISTRIBUTIONS]
  assert "tensorflow-datasets" in {_name(r) for r in installed}
  assert len(calls) == 2


def test_tensorflow_pins_do_not_fight_a_preinstalled_tensorflow():
  options = _setup_cfg()["options"]
  required = {_name(r): Requirement(r) for r in _requirements(options["install_requires"])}
  # Exactly one TensorFlow distribution, pinned, and it is the one the install cell skips where
  # TensorFlow is already installed (a `tensorflow` requirement would replace Colab's instead).
  assert [n for n in required if n in TF_DISTRIBUTIONS] == ["tensorflow-cpu"]
  assert required["tensorflow-cpu"].specifier, "pin tensorflow-cpu"
  assert '!= "tensorflow-cpu"]' in set_repo_url.INSTALL_CELL
  # No extra adds another distribution beside it.
  extras = _setup_cfg()["options.extras_require"]
  for extra, value in extras.items():
    named = {_name(r) for r in _requirements(value)} & TF_DISTRIBUTIONS
    assert not named, f"extra [{extra}] requires {sorted(named)} beside install_requires' tensorflow-cpu"
  # TFDS must not pull a TensorFlow distribution of its own (it leaves the choice to its users).
  assert "tensorflow-datasets" in required
  tfds_requires = importlib.metadata.requires("tensorflow-datasets") or []
  pulled = [r for r in tfds_requires if _name(r) in TF_DISTRIBUTIONS and "extra ==" not in r]
  assert not pulled, f"tensorflow-datasets requires {pulled}"
  # The TensorFlow here satisfies the pin (whichever distribution installed it).
  version = importlib.metadata.version("tensorflow-cpu")
  assert required["tensorflow-cpu"].specifier.contains(version), version


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_states_one_run_time(path):
  first = nbformat.read(path, as_version=4).cells[0].source
  assert first.count("**Runtime:**") == 1, "say which Colab runtime suits the notebook, once"
  stated = re.search(r"\*\*Runtime:\*\* about (\d+) minutes on a CPU runtime", first)
  assert stated, "state the run time as '**Runtime:** about N minutes on a CPU runtime ...'"
  assert _minutes(first) == [f"{stated.group(1)} minutes"], f"one run time, not {_minutes(first)}"
  row = next(line for line in (ROOT / "notebooks" / "README.md").read_text().splitlines()
             if f"[{path.name}]" in line)
  assert _minutes(row) == [f"{stated.group(1)} min"], f"notebooks/README.md says {_minutes(row)} for {path.name}"


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
  streams = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                    if o.output_type == "stream")
  assert ORBAX_WARNING not in streams, "an expected Orbax warning reached the notebook: read through quiet_orbax"
  images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert images, f"{path.name} drew no plot"
