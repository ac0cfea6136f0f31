"""Fingerprints of the code a workflow job runs, for Snakemake's rerun triggers.

Snakemake tracks a ``script:`` file's text but not what it imports, and file time stamps say nothing
about meaning: a comment in ``data.py`` would replan the whole paper run. A job's fingerprint is,
instead, the normalised syntax tree of its script and of every top-level definition of this package
that the script can reach: the functions, classes and constants it names, what those name in turn,
across modules. Comments, docstrings and formatting are not in a syntax tree (docstrings are removed
from it), so editing them changes nothing; editing a function that the job can call changes the
fingerprint of that job and of no job that cannot call it.

The rules hand the fingerprint to Snakemake as a ``params`` value, one short hash per module, so that
``snakemake -n`` / ``--summary`` name the module whose reachable code changed ("Params have changed").

The reach is found by name, statically: a name used inside a definition that is also a top-level name
of its module (or imported from a module of this package) is followed. Module-level statements that are
not definitions (``matplotlib.use(...)``, ``if`` blocks) are always part of their module's fingerprint,
since importing the module runs them. Code reached only through ``getattr``/``globals()`` strings is not
seen; this package does not do that.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "bagmar"
Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign


def normalised(node: ast.AST) -> str:
    """The node's syntax tree without docstrings, positions or comments, as text."""
    node = _without_docstrings(ast.parse(ast.unparse(node)))  # a copy: the caller's tree is not changed
    return ast.dump(node, annotate_fields=False, include_attributes=False)


# A workflow parse fingerprints every script, and the scripts share most of the package: each module file is
# parsed, and each of its statements normalised, once per process. Keyed by the file's path, size and
# modification time, so an edited file is read again; a statement's text is kept beside the node itself.
_MODULES: dict[tuple, "_Module"] = {}
_NORMALISED: dict[int, tuple[ast.AST, str]] = {}


def _normalised_once(node: ast.AST) -> str:
    cached = _NORMALISED.get(id(node))
    if cached is None or cached[0] is not node:
        cached = _NORMALISED[id(node)] = (node, normalised(node))
    return cached[1]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


class _Module:
    """One module of the package: its top-level definitions and what its imports bind.

    ``name`` is dotted below the package ("training.engine"; "" for the package's own __init__, "training" for a
    subpackage's); ``is_package`` says whether it is an __init__, which relative imports resolve from.
    """

    def __init__(self, name: str, path: Path, is_package: bool = False, exists=lambda name: False):
        self.name, self.is_package, self._exists = name, is_package, exists
        tree = ast.parse(path.read_text(), filename=str(path))
        self.definitions: dict[str, ast.AST] = {}
        self.prelude: list[ast.AST] = []  # module-level statements that run on import
        self.imported: dict[str, tuple[str, str | None]] = {}  # local name -> (module, name or None: the module)
        for statement in tree.body:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                self._bind(statement)
            elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.definitions[statement.name] = statement
            elif isinstance(statement, (ast.Assign, ast.AnnAssign)) and _assigned_names(statement):
                for target in _assigned_names(statement):
                    self.definitions[target] = statement
            elif not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)):
                self.prelude.append(statement)  # the module docstring is not code

    def _bind(self, statement: ast.Import | ast.ImportFrom) -> None:
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.name.split(".")[0] == PACKAGE and "." in alias.name and alias.asname:
                    self.imported[alias.asname] = (alias.name.partition(".")[2], None)
            return
        if statement.level:
            parts = self.name.split(".") if self.name else []
            base = parts if self.is_package else parts[:-1]
            base = base[:len(base) - (statement.level - 1)]
            source = ".".join([*base, *([statement.module] if statement.module else [])])
        elif (statement.module or "").split(".")[0] == PACKAGE:
            source = statement.module.partition(".")[2]
        else:
            return  # a third-party import: its version is the software environment's business
        for alias in statement.names:
            local = alias.asname or alias.name
            submodule = f"{source}.{alias.name}" if source else alias.name
            # "from . import checkpoint" / "from bagmar.evaluation import plots" bind a module; else a name in it
            self.imported[local] = (submodule, None) if self._exists(submodule) else (source, alias.name)


def _assigned_names(statement: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _names_used(node: ast.AST) -> set[tuple[str, str | None]]:
    """(name, attribute) for every name read in the node; attribute is set for ``name.attribute``."""
    used = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
            used.add((child.value.id, child.attr))
        elif isinstance(child, ast.Name):
            used.add((child.id, None))
    return used


class Reach:
    """The package's definitions reachable from scripts, collected per module."""

    def __init__(self, package_dir: Path):
        self.package_dir = Path(package_dir)
        self.modules: dict[str, _Module] = {}
        self.reached: dict[str, dict[str, ast.AST]] = {}  # module -> name -> definition
        self.whole: set[str] = set()  # modules reached as a whole (their prelude runs on import)

    def _path(self, name: str) -> Path | None:
        """The file of a module named below the package ("" is the package's __init__), or None."""
        folder = self.package_dir.joinpath(*name.split(".")) if name else self.package_dir
        for path in (folder / "__init__.py", folder.with_suffix(".py") if name else None):
            if path is not None and path.is_file():
                return path
        return None

    def module(self, name: str) -> _Module:
        if name not in self.modules:
            path = self._path(name)
            if path is None:
                raise FileNotFoundError(f"{self.package_dir}: {PACKAGE}.{name} is imported but not found")
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in _MODULES:
                _MODULES[key] = _Module(name, path, path.name == "__init__.py",
                                        lambda module: self._path(module) is not None)
            self.modules[name] = _MODULES[key]
        return self.modules[name]

    def add_module(self, name: str) -> None:
        """Importing a module runs its prelude, and before it those of the packages that hold it (their __init__)."""
        if name in self.whole:
            return
        self.whole.add(name)
        if name:
            parts = name.split(".")
            self.add_module(".".join(parts[:-1]))  # importing bagmar.a.b runs bagmar's and bagmar.a's __init__ first
        module = self.module(name)
        for statement in module.prelude:
            self._follow(module, statement)

    def add(self, module_name: str, name: str | None) -> None:
        """A definition (or, for name None, a module object) and everything it can reach."""
        self.add_module(module_name)
        if name is None:
            return
        module = self.module(module_name)
        if name in module.imported:
            self.add(*module.imported[name])
            return
        definition = module.definitions.get(name)
        if definition is None:
            return  # a builtin, a local variable or a third-party name
        reached = self.reached.setdefault(module_name, {})
        if name in reached:
            return
        reached[name] = definition
        self._follow(module, definition)

    def _follow(self, module: _Module, node: ast.AST) -> None:
        for name, attribute in _names_used(node):
            target = module.imported.get(name)
            if target is not None and target[1] is None:  # "module.attribute" on an imported package module
                self.add(target[0], attribute)
            else:
                self.add(module.name, name)

    def add_script(self, path: Path) -> None:
        """A script's own imports from the package; what it does with them is in its own fingerprint."""
        script = _Module("__script__", Path(path), exists=lambda module: self._path(module) is not None)
        for local, (source, name) in script.imported.items():
            if name is None:
                self.add_module(source)
                for used, attribute in _names_used(ast.parse(Path(path).read_text())):
                    if used == local:
                        self.add(source, attribute)
            else:
                self.add(source, name)

    def digests(self) -> dict[str, str]:
        """Module -> short hash of its prelude and its reached definitions (in source order)."""
        out = {}
        for name in sorted(self.whole):
            module = self.modules[name]
            reached = self.reached.get(name, {})
            statements = module.prelude + sorted({id(d): d for d in reached.values()}.values(), key=lambda d: d.lineno)
            if not statements:
                continue  # e.g. an __init__ that is only a docstring
            text = "\n".join(_normalised_once(statement) for statement in statements)
            out[f"{PACKAGE}.{name}" if name else f"{PACKAGE}.__init__"] = hashlib.sha256(text.encode()).hexdigest()[:12]
        return out


def code_fingerprint(script: str | Path, package_dir: str | Path, *modules: str | Path) -> dict[str, str]:
    """What a job runs, as {file or module: short hash}: its script and the package code it can reach, and
    ``modules`` of the user's own that it runs (a loss of one's own: the whole module, normalised)."""
    script = Path(script)
    reach = Reach(Path(package_dir))
    reach.add_script(script)
    own = {Path(module).name: _file_digest(Path(module)) for module in modules}
    return {script.name: _file_digest(script), **reach.digests(), **own}


def as_params(fingerprint: dict[str, str], prefix: str = "code", slots: int = 0) -> dict[str, str]:
    """A fingerprint as Snakemake params, one a file: ``{prefix}_{i}: "<file or module> <hash>"``, so that a dry
    run's reason names the one module that changed, in a short line. Padded to ``slots`` with copies of the first
    value: Snakemake compares a job's params as a set of values, so the padding changes nothing there."""
    values = [f"{name} {digest}" for name, digest in fingerprint.items()]
    values += values[:1] * (slots - len(values))
    return {f"{prefix}_{i}": value for i, value in enumerate(values)}


def from_params(params, prefix: str = "code") -> dict[str, str]:
    """The fingerprint that ``as_params`` spread over a job's params (a Snakemake Namedlist), back as one dict."""
    pattern = f"{prefix}_"
    return dict(value.rsplit(" ", 1) for key, value in params.items()
                if key.startswith(pattern) and key[len(pattern):].isdigit() and value)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(normalised(ast.parse(path.read_text())).encode()).hexdigest()[:12]
