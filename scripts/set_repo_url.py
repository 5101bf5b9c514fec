"""Points every notebook at the repository in setup.cfg's `url`: the Colab badge and `JAXLAB_REPO`.

    python scripts/set_repo_url.py                     # notebooks/ from setup.cfg's url
    python scripts/set_repo_url.py https://github.com/me/jaxlab   # a fork: setup.cfg too
    python scripts/set_repo_url.py --check             # exit 1 if a notebook disagrees

setup.cfg's `url` is the one place the repository location is declared. Each notebook opens with
a Colab badge for it, then the same two install cells (a note and the code, kept here, so that
they stay identical in every notebook); this script rewrites those three cells and nothing else.
tests/test_notebooks.py checks that the committed notebooks are what it writes.
"""

from __future__ import annotations

import argparse
import configparser
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETUP_CFG = ROOT / "setup.cfg"
NOTEBOOKS = ROOT / "notebooks"
BRANCH = "main"  # the branch Colab opens the notebooks from
GITHUB = "https://github.com/"
# Colab's "open from GitHub" address, up to the notebook's name.
_BADGE_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]*/notebooks/")

INSTALL_NOTE = """\
The next cell installs jaxlab where it is not importable yet (a fresh Colab runtime), with the JAX
build for the runtime's accelerator, and does nothing elsewhere. `JAXLAB_REPO` at its top says
where from: jaxlab's git URL (a fork's, for a fork) or the path of a local clone; a notebook opened
inside a clone installs that clone. The URL is setup.cfg's `url`, like the badge above:
`python scripts/set_repo_url.py URL` changes all of them. Colab's preinstalled TensorFlow is kept
(jaxlab needs it for `tf.data` only): where TensorFlow is installed, jaxlab's `tensorflow-cpu`
requirement is skipped, so that two distributions of the same package do not overwrite each other.
If pip upgraded a package Colab had already loaded, use *Runtime → Restart session* and run on from
the cell after this one."""

INSTALL_CELL = '''\
# Where jaxlab comes from: a git URL (your fork's) or the path of a local clone.
JAXLAB_REPO = "{url}"

import glob
import importlib.metadata
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys


def _is_clone(path) -> bool:  # a jaxlab checkout: its setup.cfg names the project
  setup_cfg = pathlib.Path(path, "setup.cfg")
  return (setup_cfg.is_file() and
          re.search(r"(?m)^name\\s*=\\s*jaxlab\\s*$", setup_cfg.read_text()) is not None)


def _pip(*args):
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


if importlib.util.find_spec("jaxlab") is None:
  clone = next((pathlib.Path(p).resolve() for p in (JAXLAB_REPO, "..", ".") if _is_clone(p)), None)
  source = ["-e", str(clone)] if clone else [f"jaxlab @ git+{{JAXLAB_REPO}}"]
  accelerator = []
  if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):  # a TPU runtime
    accelerator = ["jax[tpu]"]
  elif shutil.which("nvidia-smi"):  # a GPU runtime
    accelerator = ["jax[cuda12]"]
  if importlib.util.find_spec("tensorflow") is None:
    _pip(*source, *accelerator)
  else:  # keep the installed TensorFlow: every requirement but tensorflow-cpu
    _pip("--no-deps", *source)
    importlib.invalidate_caches()
    requirements = [r for r in importlib.metadata.requires("jaxlab") if "extra ==" not in r and
                    re.sub(r"[-_.]+", "-", re.match(r"[\\w.-]+", r).group()).lower() != "tensorflow-cpu"]
    _pip(*requirements, *accelerator)'''


def repo_url(setup_cfg: pathlib.Path = SETUP_CFG) -> str:
  """setup.cfg's [metadata] url: the repository's GitHub address (Colab opens notebooks from it)."""
  parser = configparser.ConfigParser(interpolation=None)
  parser.read(setup_cfg)
  url = parser.get("metadata", "url", fallback="").strip()
  _check(url)
  return url


def _check(url: str) -> None:
  if not re.fullmatch(re.escape(GITHUB) + r"[\w.-]+/[\w.-]+", url):
    raise ValueError(f"the repository url must be {GITHUB}OWNER/NAME (Colab opens notebooks from "
                     f"GitHub), got {url!r}")


def badge_link(url: str, notebook: str) -> str:
  """The Colab address of notebooks/`notebook` in the repository at `url`."""
  return f"https://colab.research.google.com/github/{url[len(GITHUB):]}/blob/{BRANCH}/notebooks/{notebook}"


def install_cell(url: str) -> str:
  return INSTALL_CELL.format(url=url)


def updated(notebook, name: str, url: str):
  """`notebook` (nbformat, version 4) with its badge and install cells for `url`: cell 0 (the
  title, with the badge), then the install note and the install code."""
  first, note, code = notebook.cells[:3]
  if first.cell_type != "markdown" or not _BADGE_LINK.search(first.source):
    raise ValueError(f"{name}: the first cell must be markdown with the Colab badge")
  if note.cell_type != "markdown" or code.cell_type != "code":
    raise ValueError(f"{name}: cells 2 and 3 must be the install note (markdown) and the install code")
  first.source = _BADGE_LINK.sub(lambda _: badge_link(url, ""), first.source)
  note.source = INSTALL_NOTE
  code.source = install_cell(url)
  return notebook


def _set_setup_cfg_url(url: str) -> None:
  text = SETUP_CFG.read_text()
  text, count = re.subn(r"(?m)^url\s*=.*$", f"url = {url}", text, count=1)
  if not count:  # no url yet: after the name, in [metadata]
    text = re.sub(r"(?m)^(name\s*=.*)$", rf"\1\nurl = {url}", text, count=1)
  SETUP_CFG.write_text(text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("url", nargs="?", help=f"{GITHUB}OWNER/NAME; written to setup.cfg first")
  parser.add_argument("--check", action="store_true", help="exit 1 if a notebook disagrees")
  args = parser.parse_args(argv)
  if args.url:
    try:
      _check(args.url)
    except ValueError as e:
      parser.error(str(e))
    if not args.check:
      _set_setup_cfg_url(args.url)
  url = args.url or repo_url()
  stale = []
  for path in sorted(NOTEBOOKS.glob("*.ipynb")):
    text = path.read_text()
    new = nbformat.writes(updated(nbformat.reads(text, as_version=4), path.name, url)) + "\n"
    if new != text:
      stale.append(path.name)
      if not args.check:
        path.write_text(new)
  if args.check:
    if stale:
      print(f"not pointing at {url}: {', '.join(stale)}; run python scripts/set_repo_url.py", file=sys.stderr)
    return 1 if stale else 0
  print(f"notebooks point at {url}" + (f" (rewrote {', '.join(stale)})" if stale else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
