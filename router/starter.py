"""`courtyard init [DIR]`: a node directory to start from, as `crossbar init` makes one — the commented
default config (every section at its defaults), its JSON Schema for editors, the example configs and an
empty data directory. The files ship inside the package (router/configs/), read through
importlib.resources, so this works from a plain `pip install` as from a clone."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

CONFIG_NAME = "courtyard.yaml"  # what init writes, and what start and check-config read without -c
DATA_DIR = ".data"  # the default admin.data_dir, next to the config


def shipped(name: str) -> str:
    """A file shipped in the package's configs/ directory (`router.yaml`, `examples/auth.yaml`, …)."""
    return resources.files("router").joinpath("configs", *name.split("/")).read_text(encoding="utf-8")


def init(directory: str) -> int:
    """Write the starter files into `directory` (made if missing); an existing config is never
    overwritten: one line on stderr, exit 2."""
    where = Path(directory)
    config = where / CONFIG_NAME
    if config.exists() or config.is_symlink():
        print(f"courtyard init: {config} exists: not overwritten (move it aside to start again)", file=sys.stderr)
        return 2
    files = {CONFIG_NAME: shipped("router.yaml"), "courtyard.schema.json": shipped("courtyard.schema.json"),
             "examples/auth.yaml": shipped("examples/auth.yaml"),
             "examples/session_process.yaml": shipped("examples/session_process.yaml")}
    try:
        (where / "examples").mkdir(parents=True, exist_ok=True)
        (where / DATA_DIR).mkdir(mode=0o700, exist_ok=True)
        for name, text in files.items():
            target = where / name
            if name == CONFIG_NAME:
                with open(target, "x", encoding="utf-8") as f:  # never over a config made meanwhile
                    f.write(text)
            elif not target.exists():  # a schema or example already there stays
                target.write_text(text, encoding="utf-8")
    except FileExistsError:
        print(f"courtyard init: {config} exists: not overwritten (move it aside to start again)", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"courtyard init: cannot write {e.filename or where}: {e.strerror}", file=sys.stderr)
        return 2
    start = "courtyard start" if where.resolve() == Path.cwd().resolve() else f"courtyard start -c {config}"
    print(f"wrote {config} (every section at its defaults), {where / 'courtyard.schema.json'}, "
          f"{where / 'examples'}/ and the data directory {where / DATA_DIR}/")
    print(f"next: {start}   (ws://127.0.0.1:8080/ws, realm realm1)")
    return 0


def default_config() -> str | None:
    """The config `start` and `check-config` read without -c: ./courtyard.yaml if there is one (what
    `courtyard init` wrote), else None: the embedded default."""
    return CONFIG_NAME if Path(CONFIG_NAME).is_file() else None
