"""Every stage's dvc.yaml deps list all kws/ code it runs, so an edit to any of it reruns the stage
(a missing file would leave DVC serving stale results)."""
import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def kws_imports(path):
    """kws/*.py files `path` imports (at any depth of the file: function-level imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kws":
            if node.module == "kws":  # from kws import a, b
                found |= {f"kws/{a.name}.py" for a in node.names}
            else:  # from kws.a import X
                found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Import):
            found |= {a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("kws.")}
    return {f for f in found if (ROOT / f).exists()}


def closure(script):
    """The kws/ files `script` runs: its imports, theirs, and so on."""
    todo, seen = [script], set()
    while todo:
        for f in kws_imports(ROOT / todo.pop()) - seen:
            seen.add(f)
            todo.append(f)
    return seen


def stage_specs():
    """(stage name, script, deps) of every stage, a foreach stage once (its deps do not vary by item
    except in data files)."""
    for name, stage in STAGES.items():
        spec = stage.get("do", stage)
        script = spec["cmd"].split()[1]
        yield pytest.param(script, spec["deps"], id=name)


def test_closure_follows_imports_transitively():
    # io imports params: a stage importing io runs params too
    assert {"kws/io.py", "kws/params.py"} <= closure("stages/features.py")


@pytest.mark.parametrize("script,deps", list(stage_specs()))
def test_stage_deps_list_every_kws_file_it_imports(script, deps):
    assert script in deps
    missing = sorted(closure(script) - set(deps))
    assert not missing, f"dvc.yaml: the stage running {script} imports {missing} but does not list them in its deps"
