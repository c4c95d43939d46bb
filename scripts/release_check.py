"""Release check for the distributions in packages/*; run it as ``./hatchw run release:check``.

Each distribution is versioned, built, tagged (``<name>-v<version>``) and uploaded on its own, yet
users install them together (``pip install "db-core[postgres]"``). Before any of them is released
this checks, step by step:

1. versions: ``hatch version`` run inside each package folder prints the version of that package's
   ``src/<module>/__about__.py``, and its CHANGELOG.md's first ``## `` heading names that version.
   This proves each package is versioned on its own, not through the workspace.
2. extras: db-core has one extra ``<x>`` requiring exactly ``db-<x>`` for every other package,
   ``all`` covers exactly those but :data:`OPT_IN_SIBLINGS`, plus the extras in :data:`IN_ALL`; any
   other extra is listed in :data:`NON_SIBLING_EXTRAS`.
3. sibling ranges: every requirement on a sibling is a range with a lower and an upper bound that
   admits the sibling's current version. A pin (``==``) would force a release of every dependant
   for each patch release, and an open range would let an old release pull in a future
   incompatible sibling.
4. build: ``hatch build`` (sdist and wheel) from each package's own folder into a fresh directory,
   ``twine check --strict`` on every artifact, and the files a user relies on are in them
   (README.md, CHANGELOG.md, pyproject.toml and py.typed in the sdist; py.typed in the wheel).
5. installs: db-core alone, with each extra and with ``all``, each in a new virtual environment
   made by uv from the built wheels. Every installed ``db-*`` distribution must be the one built
   here (version, ``db_core.connectors`` entry points, installed from our wheel file); ``db
   backends`` lists exactly the installed connectors; db_fastapi imports; ``db check`` works on
   SQLite; ``import db_core`` never imports fastapi or starlette.
6. the name trap: PyPI holds an UNRELATED project named ``db-mysql`` (0.1.2, which satisfies our
   ``db-mysql>=0.1.0,<0.2``). Any installer asked for ``db-core[mysql]`` by name fetches it. Step 5
   therefore hands uv every sibling as a wheel FILE, never a name, and this step proves that the
   verification of step 5 rejects whatever the index gives instead of our wheel.
7. lowest versions: db-core (with its ``testing`` extra) and db-sqlite with their third-party
   dependencies at the lower bounds they declare (``uv pip install --resolution lowest-direct``)
   must install and pass db_core's conformance kit for db-sqlite: a lower bound nobody installs
   is a guess. When it fails, each bound is tried alone to name the one that does not hold.

Each check prints one line, ``ok ...`` or ``FAIL ...`` with the reason; a summary table ends the
run, and the exit status is 1 if anything failed. Nothing is uploaded and nothing in the
repository changes: everything is built and installed under a temporary directory (``--keep``
keeps it). The script needs only the standard library and ``packaging``; uv and twine are called
as commands, from the ``release`` environment of hatch.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

# Extras of db-core that do not name a sibling, each with the distributions it must require.
# They stay out of `all`, which is for the siblings, unless listed in IN_ALL.
NON_SIBLING_EXTRAS: dict[str, frozenset[str]] = {
    "testing": frozenset({"pytest"}),
    "migrations": frozenset({"alembic"}),
    "opentelemetry": frozenset({"opentelemetry-api", "opentelemetry-instrumentation-sqlalchemy"}),
}
# The non-sibling extras that `all` includes (features of db-core itself, not tools for connector authors).
IN_ALL: frozenset[str] = frozenset({"migrations"})
# Siblings that stay out of `all`: db-pytest is a pytest plugin, active in every pytest run of an
# environment it is installed in, so it belongs in a test environment's requirements only.
OPT_IN_SIBLINGS = frozenset({"db-pytest"})

# db-core's extras installed in step 5, each into its own venv (None: db-core alone).
COMBINATIONS: tuple[str | None, ...] = (
    None,
    "postgres",
    "mysql",
    "sqlite",
    "fastapi",
    "pytest",
    "opentelemetry",
    "all",
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES_DIR = ROOT / "packages"
HATCH = ROOT / ".hatch" / "bin" / "hatch"  # the hatch ./hatchw installs and runs
CORE = "db-core"
ENTRY_POINT_GROUP = "db_core.connectors"
NO_CONNECTORS = "no connectors installed"
WEB_FRAMEWORKS = ("fastapi", "starlette")
TIMEOUT = 300  # seconds, for one build or one install

# Variables of `hatch run` or of the developer's shell that must not reach hatch or the clean venvs.
# HATCH_ENV_ACTIVE would make hatch look for the `release` environment in a package that has none.
_LEAKY = {"HATCH_ENV_ACTIVE", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "CONDA_PREFIX"}


class CheckError(Exception):
    """A check could not be carried out (a command failed); the message says why."""


# -- the packages -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """One distribution of packages/*, as its pyproject.toml and ``__about__.py`` declare it."""

    name: str  # canonical distribution name, e.g. "db-core"
    folder: Path
    module: str
    version: str | None  # from src/<module>/__about__.py
    dependencies: tuple[Requirement, ...]
    extras: dict[str, tuple[Requirement, ...]]
    connectors: dict[str, str]  # its db_core.connectors entry points, name to "module:Class"

    def requirements(self) -> Iterator[tuple[str, Requirement]]:
        """Every requirement with where it is declared ("dependencies" or "extra <name>")."""
        for req in self.dependencies:
            yield "dependencies", req
        for extra, reqs in self.extras.items():
            for req in reqs:
                yield f"extra {extra!r}", req


def load_packages() -> dict[str, Package]:
    """Every folder of packages/*/ with a pyproject.toml, by canonical distribution name."""
    packages: dict[str, Package] = {}
    for folder in sorted(p for p in PACKAGES_DIR.iterdir() if p.is_dir()):
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            raise CheckError(f"{folder.relative_to(ROOT)} has no pyproject.toml")
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
            name = canonicalize_name(project["name"])
        except (tomllib.TOMLDecodeError, KeyError) as exc:
            raise CheckError(f"{pyproject.relative_to(ROOT)}: no [project] name: {exc}") from exc
        module = name.replace("-", "_")
        try:
            dependencies = tuple(Requirement(r) for r in project.get("dependencies", []))
            extras: dict[str, tuple[Requirement, ...]] = {
                canonicalize_name(extra): tuple(Requirement(r) for r in reqs)
                for extra, reqs in project.get("optional-dependencies", {}).items()
            }
        except InvalidRequirement as exc:
            raise CheckError(f"{pyproject.relative_to(ROOT)}: {exc}") from exc
        about = folder / "src" / module / "__about__.py"
        text = about.read_text(encoding="utf-8") if about.is_file() else ""
        match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
        packages[name] = Package(
            name=name,
            folder=folder,
            module=module,
            version=match.group(1) if match else None,
            dependencies=dependencies,
            extras=extras,
            connectors=dict(project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})),
        )
    if CORE not in packages:
        raise CheckError(f"no {CORE} in {PACKAGES_DIR.relative_to(ROOT)}")
    return packages


def siblings_pulled_in(packages: dict[str, Package], name: str, extras: Iterable[str] = ()) -> set[str]:
    """The siblings that installing ``name[extras]`` brings in, ``name`` included."""
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(name, frozenset(canonicalize_name(e) for e in extras))]
    while todo:
        current, wanted = todo.pop()
        if (current, wanted) in seen:
            continue
        seen.add((current, wanted))
        found.add(current)
        package = packages[current]
        reqs = [*package.dependencies, *(r for extra in wanted for r in package.extras.get(extra, ()))]
        for req in reqs:
            if canonicalize_name(req.name) in packages:
                todo.append((canonicalize_name(req.name), frozenset(canonicalize_name(e) for e in req.extras)))
    return found


def lower_bound(req: Requirement) -> Version | None:
    """The lowest version ``req`` admits when a ``>=``, ``~=`` or ``==`` clause names it, else None."""
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "~=", "==") and "*" not in s.version]
    return max(bounds, default=None)


# -- running commands -------------------------------------------------------------------------------------------------


def clean_env(**values: str) -> dict[str, str]:
    """The environment of this process without ``DB_*`` settings or an active environment, plus ``values``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _LEAKY and not key.upper().startswith("DB_") and key.upper() != "DATABASE_URL"
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"  # only the interpreter running this script, never a downloaded one
    env.update(values)
    return env


def run(
    args: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` non-interactively in :func:`clean_env` plus ``env``; a timeout is exit status 124."""
    command = [str(a) for a in args]
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=clean_env(**(env or {})),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"timed out after {timeout:g} s")


def output_tail(result: subprocess.CompletedProcess[str], lines: int = 12) -> str:
    """The command, its exit status and the last ``lines`` lines of its output, for a FAIL line."""
    text = (result.stderr + "\n" + result.stdout).strip().splitlines()[-lines:]
    command = " ".join(Path(a).name if a.startswith("/") else a for a in result.args)
    return f"`{command}` exited {result.returncode}" + "".join(f"\n      | {line}" for line in text)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """The last line of output, usually the error itself."""
    lines = (result.stdout + "\n" + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}, no output"


def tool(name: str) -> Path:
    """A command of the environment running this script (the ``release`` environment of hatch.toml)."""
    beside = Path(sys.executable).parent / name
    found = beside if beside.is_file() else shutil.which(name)
    if found is None:
        raise CheckError(f"`{name}` not found: run this script with ./hatchw run release:check")
    return Path(found)


# -- virtual environments ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A distribution installed in a venv, as importlib.metadata sees it from inside."""

    version: str
    connectors: dict[str, str]
    url: str | None  # from direct_url.json; None when it came from a package index


# Run inside a venv: every installed distribution, its connectors and where it came from.
INSPECT = """
import json, sys
from importlib.metadata import distributions
found = {}
for dist in distributions():
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    found[dist.metadata["Name"]] = {
        "version": dist.version,
        "connectors": {ep.name: ep.value for ep in dist.entry_points if ep.group == "db_core.connectors"},
        "url": direct_url.get("url"),
    }
json.dump(found, sys.stdout)
"""


@dataclass(frozen=True)
class Venv:
    """A virtual environment made by uv with the interpreter running this script, and a work directory."""

    path: Path
    work: Path  # outside the repository (no .env file), for commands and SQLite files

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.path / "bin" / "python"

    @classmethod
    def create(cls, parent: Path, label: str) -> Venv:
        """A new, empty venv under ``parent``."""
        slug = re.sub(r"[^\w.-]+", "-", label).strip("-")
        venv = cls(parent / f"venv-{slug}", parent / f"work-{slug}")
        venv.work.mkdir(parents=True)
        result = run([tool("uv"), "venv", "--quiet", "--python", sys.executable, venv.path], cwd=venv.work)
        if result.returncode != 0:
            raise CheckError(f"cannot create a venv: {output_tail(result)}")
        return venv

    def install(self, requirements: Sequence[str | Path], *, lowest: bool = False) -> subprocess.CompletedProcess[str]:
        """``uv pip install`` into this venv (``--resolution lowest-direct`` when ``lowest``)."""
        resolution = ["--resolution", "lowest-direct"] if lowest else []
        return run([tool("uv"), "pip", "install", "--python", self.python, *resolution, *requirements], cwd=self.work)

    def command(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run one of the venv's commands (``db``, ``python``) in the work directory."""
        return run([self.path / "bin" / args[0], *args[1:]], cwd=self.work, env=env, timeout=120)

    def installed(self) -> dict[str, Installed]:
        """Every installed distribution, by canonical name, read with importlib.metadata inside the venv."""
        result = self.command("python", "-c", INSPECT)
        if result.returncode != 0:
            raise CheckError(f"cannot list the installed distributions: {output_tail(result)}")
        return {canonicalize_name(name): Installed(**info) for name, info in json.loads(result.stdout).items()}


def picked(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What uv installed, from its ``+ name==version`` lines."""
    return [line.strip()[2:] for line in result.stderr.splitlines() if line.startswith(" + ")]


def same_version(a: str, b: str) -> bool:
    """Whether two version strings are the same version."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def verify_ours(
    found: dict[str, Installed], expected: set[str], packages: dict[str, Package], wheels: dict[str, Path]
) -> list[str]:
    """Why the ``db-*`` distributions in ``found`` are not exactly ``expected``, each built here; [] if they are.

    A distribution is ours when it has our version, exactly the connector entry points our
    pyproject.toml declares, and was installed from the wheel this script built: the last one
    rejects even a same-version upload by someone else.
    """
    problems = [f"{name} is not installed" for name in sorted(expected - found.keys())]
    for name, info in sorted(found.items()):
        if not name.startswith("db-"):
            continue
        package = packages.get(name)
        if package is None:
            problems.append(f"{name} {info.version} is installed but is none of packages/*")
            continue
        if name not in expected:
            problems.append(f"{name} {info.version} is installed but should not have been pulled in")
        reasons = []
        if package.version is None or not same_version(info.version, package.version):
            reasons.append(f"version {info.version} (ours: {package.version})")
        if info.connectors != package.connectors:
            reasons.append(f"{ENTRY_POINT_GROUP} entry points {info.connectors} (ours: {package.connectors})")
        wheel = wheels.get(name)
        if wheel is None or info.url != wheel.as_uri():
            reasons.append(f"installed from {info.url or 'a package index'}, not from our wheel")
        if reasons:
            problems.append(f"{name} {info.version} is not ours: " + "; ".join(reasons))
    return problems


# -- the report -------------------------------------------------------------------------------------------------------


@dataclass
class StepTally:
    """The outcome of one step, for the summary table."""

    title: str
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class Report:
    """Prints ``ok``/``FAIL`` lines as they come and counts them per step."""

    def __init__(self) -> None:
        self.steps: list[StepTally] = []

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """Group the lines printed inside under ``title``; a :class:`CheckError` escaping it is one FAIL."""
        tally = StepTally(title)
        self.steps.append(tally)
        print(f"\n== {title}", flush=True)
        start = time.monotonic()
        try:
            yield
        except CheckError as exc:
            self.fail(str(exc))
        finally:
            tally.seconds = time.monotonic() - start

    def ok(self, message: str) -> None:
        """A check that passed."""
        self.steps[-1].ok += 1
        print(f"ok {message}", flush=True)

    def fail(self, message: str) -> None:
        """A check that failed, with its reason."""
        self.steps[-1].failed += 1
        self.steps[-1].failures.append(message.splitlines()[0])
        print(f"FAIL {message}", flush=True)

    def info(self, message: str) -> None:
        """Something worth seeing that is not a check."""
        print(f"   {message}", flush=True)

    def expect(self, problems: Sequence[str], success: str, prefix: str) -> bool:
        """One FAIL per problem (``prefix: problem``), or one ok ``success`` when there are none."""
        for problem in problems:
            self.fail(f"{prefix}: {problem}")
        if not problems:
            self.ok(success)
        return not problems

    def summary(self) -> int:
        """Print the summary table; the exit status: 1 if anything failed."""
        width = max(len(s.title) for s in self.steps)
        print(f"\n== summary\n{'step':<{width}}  {'ok':>3}  {'FAIL':>4}  {'time':>6}")
        for s in self.steps:
            print(f"{s.title:<{width}}  {s.ok:>3}  {s.failed:>4}  {s.seconds:>5.1f}s")
        failures = [(s.title, f) for s in self.steps for f in s.failures]
        if failures:
            print("failures:")
        for title, failure in failures:
            print(f"  [{title}] {failure}")
        print("release check: " + (f"FAILED ({len(failures)} failed)" if failures else "passed"))
        return 1 if failures else 0


# -- 1. versions ------------------------------------------------------------------------------------------------------


def check_versions(report: Report, packages: dict[str, Package]) -> None:
    """``hatch version`` in each package folder prints its ``__about__`` version; CHANGELOG.md names it."""
    if not HATCH.is_file():
        raise CheckError(f"{HATCH.relative_to(ROOT)} not found: run ./hatchw once to install hatch")
    for package in packages.values():
        about = f"src/{package.module}/__about__.py"
        if package.version is None:
            report.fail(f'{package.name}: no `__version__ = "..."` in {about}')
            continue
        result = run([HATCH, "version"], cwd=package.folder)
        printed = result.stdout.strip()
        if result.returncode != 0:
            report.fail(f"{package.name}: {output_tail(result)}")
        elif printed != package.version:
            report.fail(
                f"{package.name}: `hatch version` in its folder prints {printed!r}, {about} says {package.version}"
            )
        else:
            report.ok(f"{package.name}: `hatch version` in its folder prints {printed}, as {about} says")
        check_changelog(report, package)


def check_changelog(report: Report, package: Package) -> None:
    """The first ``## `` heading of the package's CHANGELOG.md names its current version."""
    changelog = package.folder / "CHANGELOG.md"
    if not changelog.is_file():
        report.fail(f"{package.name}: no CHANGELOG.md")
        return
    lines = changelog.read_text(encoding="utf-8").splitlines()
    heading = next((line for line in lines if line.startswith("## ")), None)
    match = re.match(r"## \[?v?([^\s\]]+)", heading or "")
    if match is None or package.version is None or not same_version(match.group(1), package.version):
        report.fail(f"{package.name}: CHANGELOG.md's first '## ' heading is {heading!r}, not {package.version}")
    else:
        report.ok(f"{package.name}: CHANGELOG.md starts with {heading!r}")


# -- 2. db-core's extras ----------------------------------------------------------------------------------------------


def check_core_extras(report: Report, packages: dict[str, Package]) -> None:
    """db-core has an extra per sibling, ``all`` covers exactly them, other extras are declared exceptions."""
    core = packages[CORE]
    siblings = {name.removeprefix("db-"): name for name in packages if name != CORE}
    for extra, sibling in sorted(siblings.items()):
        reqs = core.extras.get(extra)
        if reqs is None:
            report.fail(f"{CORE} has no extra {extra!r} for {sibling}")
        elif [canonicalize_name(r.name) for r in reqs] != [sibling] or reqs[0].extras or reqs[0].marker:
            report.fail(f"{CORE}[{extra}] must require exactly {sibling}, not {', '.join(map(str, reqs))}")
        elif not reqs[0].specifier:
            report.fail(f"{CORE}[{extra}] requires {sibling} without a version range")
        else:
            report.ok(f"{CORE}[{extra}] = {reqs[0]}")

    if "all" not in core.extras:
        report.fail(f"{CORE} has no extra 'all'")
    else:
        referenced, names = expand_extra(core, "all")
        non_sibling = sorted((referenced & NON_SIBLING_EXTRAS.keys()) - IN_ALL)
        allowed = set(packages.keys()).union(*(NON_SIBLING_EXTRAS[extra] for extra in IN_ALL))
        report.expect(
            [f"{CORE}[all] is missing {name}" for name in sorted(set(siblings.values()) - names - OPT_IN_SIBLINGS)]
            + [f"{CORE}[all] includes {name}, which is opt-in" for name in sorted(names & OPT_IN_SIBLINGS)]
            + [f"{CORE}[all] is missing the extra {extra!r}" for extra in sorted(IN_ALL - referenced)]
            + [f"{CORE}[all] requires {name}, which is not a sibling" for name in sorted(names - allowed)]
            + [f"{CORE}[all] includes the non-sibling extra {extra!r}" for extra in non_sibling],
            f"{CORE}[all] covers every sibling and {', '.join(sorted(IN_ALL))}: {', '.join(sorted(names))}",
            "all",
        )

    for extra, reqs in sorted(core.extras.items()):
        if extra in siblings or extra == "all":
            continue
        names = {canonicalize_name(r.name) for r in reqs}
        if extra not in NON_SIBLING_EXTRAS:
            report.fail(f"{CORE}[{extra}] names no sibling and is not in NON_SIBLING_EXTRAS ({Path(__file__).name})")
        elif not NON_SIBLING_EXTRAS[extra] <= names or names & packages.keys():
            report.fail(f"{CORE}[{extra}] must require {sorted(NON_SIBLING_EXTRAS[extra])} and no sibling: {names}")
        else:
            report.ok(f"{CORE}[{extra}] is a listed non-sibling extra: {', '.join(map(str, reqs))}")


def expand_extra(core: Package, extra: str) -> tuple[set[str], set[str]]:
    """The extras of db-core that ``extra`` refers to (through ``db-core[a,b]``), and the names it requires."""
    referenced, names = {extra}, set[str]()
    todo = [extra]
    while todo:
        for req in core.extras.get(todo.pop(), ()):
            if canonicalize_name(req.name) != core.name:
                names.add(canonicalize_name(req.name))
                continue
            new = {canonicalize_name(e) for e in req.extras} - referenced
            referenced |= new
            todo.extend(new)
    return referenced, names


# -- 3. sibling ranges ------------------------------------------------------------------------------------------------


def range_problem(req: Requirement, version: str) -> str | None:
    """Why ``req`` is not a range with both bounds admitting ``version``; None when it is."""
    operators = {spec.operator for spec in req.specifier}
    if req.url:
        return "a direct URL reference, not a range"
    if not operators:
        return "no version range (a bare name)"
    if operators & {"==", "==="}:
        return "a pin (==/===): every release of it would force a release of the dependant"
    if not operators & {">=", ">", "~="}:
        return "no lower bound"
    if not operators & {"<", "<=", "~="}:
        return "no upper bound: a future incompatible release would be accepted"
    if not req.specifier.contains(version, prereleases=True):
        return f"does not admit its current version {version}"
    return None


def check_sibling_ranges(report: Report, packages: dict[str, Package]) -> None:
    """Every requirement on a sibling is a bounded range that admits the sibling's current version."""
    for package in packages.values():
        for where, req in package.requirements():
            name = canonicalize_name(req.name)
            # db-core[all] -> db-core[postgres,...] refers to db-core itself (hatchling inlines it).
            if name not in packages or name == package.name:
                continue
            version = packages[name].version or "?"
            problem = range_problem(req, version)
            if problem:
                report.fail(f"{package.name} {where}: {req}: {problem}")
            else:
                report.ok(f"{package.name} {where}: {req} admits {name} {version}")


# -- 4. build ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifacts:
    """The sdist and wheel built for one package."""

    sdist: Path
    wheel: Path


def check_build(report: Report, packages: dict[str, Package], dist_dir: Path) -> dict[str, Artifacts]:
    """Build each package from its own folder, ``twine check --strict`` the artifacts and look inside them."""
    built: dict[str, Artifacts] = {}
    for package in packages.values():
        out = dist_dir / package.name
        result = run([HATCH, "build", out], cwd=package.folder)
        sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
        if result.returncode != 0 or len(sdists) != 1 or len(wheels) != 1:
            report.fail(
                f"{package.name}: `hatch build` made {[p.name for p in sdists + wheels]}: {output_tail(result)}"
            )
            continue
        artifacts = Artifacts(sdists[0], wheels[0])
        problems = artifact_problems(package, artifacts)
        twine = run([tool("twine"), "check", "--strict", artifacts.sdist, artifacts.wheel], cwd=out)
        if twine.returncode != 0:
            problems.append(f"twine check --strict: {output_tail(twine)}")
        if report.expect(problems, f"{package.name}: {artifacts.sdist.name}, {artifacts.wheel.name}", package.name):
            built[package.name] = artifacts
    return built


def artifact_problems(package: Package, artifacts: Artifacts) -> list[str]:
    """What is wrong with the names or contents of ``artifacts``."""
    problems = []
    wheel_name, wheel_version, _build, _tags = parse_wheel_filename(artifacts.wheel.name)
    sdist_name, sdist_version = parse_sdist_filename(artifacts.sdist.name)
    for kind, name, version in (("wheel", wheel_name, wheel_version), ("sdist", sdist_name, sdist_version)):
        if name != package.name or package.version is None or version != Version(package.version):
            problems.append(f"the {kind} is {name} {version}, not {package.name} {package.version}")

    with tarfile.open(artifacts.sdist) as sdist:
        # Members are <name>-<version>/<path>; compare the paths inside that top folder.
        in_sdist = {member.split("/", 1)[1] for member in sdist.getnames() if "/" in member}
    wanted = ["README.md", "CHANGELOG.md", "pyproject.toml", f"src/{package.module}/py.typed"]
    problems += [f"the sdist lacks {path}" for path in wanted if path not in in_sdist]

    with zipfile.ZipFile(artifacts.wheel) as wheel:
        if f"{package.module}/py.typed" not in wheel.namelist():
            problems.append(f"the wheel lacks {package.module}/py.typed")
    return problems


# -- 5. installs from the built wheels --------------------------------------------------------------------------------


def check_installs(report: Report, packages: dict[str, Package], built: dict[str, Artifacts], tmp: Path) -> None:
    """db-core alone and with each extra of :data:`COMBINATIONS`, each in a clean venv from our wheels."""
    wheels = {name: artifacts.wheel for name, artifacts in built.items()}
    for extra in COMBINATIONS:
        label = CORE if extra is None else f"{CORE}[{extra}]"
        try:
            check_combination(report, packages, wheels, tmp, extra, label)
        except CheckError as exc:
            report.fail(f"{label}: {exc}")


def check_combination(
    report: Report, packages: dict[str, Package], wheels: dict[str, Path], tmp: Path, extra: str | None, label: str
) -> None:
    """Install ``label`` from our wheel files only, then check what got installed and that it works."""
    expected = siblings_pulled_in(packages, CORE, [extra] if extra else [])
    missing = sorted(expected - wheels.keys())
    if missing:
        raise CheckError(f"not installed: no wheel was built for {', '.join(missing)}")
    venv = Venv.create(tmp, label)
    core = f"{wheels[CORE]}[{extra}]" if extra else str(wheels[CORE])
    # Every sibling as a wheel FILE: by name, the index's unrelated db-mysql would win (step 6).
    result = venv.install([core, *(wheels[name] for name in sorted(expected - {CORE}))])
    if result.returncode != 0:
        raise CheckError(f"install failed: {output_tail(result)}")
    found = venv.installed()
    mine = ", ".join(f"{name} {found[name].version}" for name in sorted(expected) if name in found)
    report.expect(verify_ours(found, expected, packages, wheels), f"{label}: {mine}, all ours", label)

    connectors = {name for sibling in expected for name in packages[sibling].connectors}
    check_backends_lists(report, venv, label, connectors)
    if "db-fastapi" in expected:
        result = venv.command("python", "-c", "import db_fastapi")
        report.expect([] if result.returncode == 0 else [output_tail(result)], f"{label}: import db_fastapi", label)
    if "db-sqlite" in expected:
        result = venv.command("db", "check", env={"DB_TYPE": "sqlite", "DB_NAME": str(venv.work / "x.db")})
        ok = result.returncode == 0
        report.expect([] if ok else [output_tail(result)], f"{label}: DB_TYPE=sqlite db check exits 0", label)
    check_no_web_framework(report, venv, label, found, fastapi_installed="db-fastapi" in expected)


def check_backends_lists(report: Report, venv: Venv, label: str, connectors: set[str]) -> None:
    """``db backends`` lists exactly ``connectors`` (or says none are installed, exit 1, when there are none)."""
    result = venv.command("db", "backends")
    if "Traceback" in result.stderr:
        report.fail(f"{label}: db backends: {output_tail(result)}")
    elif not connectors:
        said_none = result.returncode == 1 and result.stdout.startswith(NO_CONNECTORS)
        problems = [] if said_none else [f"db backends should say {NO_CONNECTORS!r} and exit 1: {output_tail(result)}"]
        report.expect(problems, f"{label}: db backends says {NO_CONNECTORS!r}, exit 1", label)
    elif result.returncode != 0:
        report.fail(f"{label}: db backends: {output_tail(result)}")
    elif (listed := backend_names(result.stdout)) is None:
        report.fail(f"{label}: db backends printed no table with a NAME column: {output_tail(result)}")
    else:
        wrong = sorted(listed) != sorted(connectors)
        problems = [f"db backends lists {sorted(listed)}, installed: {sorted(connectors)}"] if wrong else []
        report.expect(problems, f"{label}: db backends lists {', '.join(sorted(listed))}", label)


def backend_names(stdout: str) -> list[str] | None:
    """The NAME column of the ``db backends`` table (only the first column: the others may change); None: no table."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines or lines[0].split()[0] != "NAME":
        return None
    return [line.split()[0] for line in lines[1:]]


def check_no_web_framework(
    report: Report, venv: Venv, label: str, found: dict[str, Installed], *, fastapi_installed: bool
) -> None:
    """``import db_core`` imports neither fastapi nor starlette; without db-fastapi neither is installed."""
    code = f"import sys, db_core; print(*sorted(m for m in sys.modules if m.split('.')[0] in {WEB_FRAMEWORKS!r}))"
    result = venv.command("python", "-c", code)
    problems = [] if result.returncode == 0 else [output_tail(result)]
    if result.stdout.strip():
        problems.append(f"import db_core imported {result.stdout.strip()}")
    if not fastapi_installed:
        problems += [f"{name} is installed without db-fastapi" for name in WEB_FRAMEWORKS if name in found]
    where = "with fastapi installed" if fastapi_installed else "fastapi and starlette not installed"
    report.expect(problems, f"{label}: import db_core imports neither fastapi nor starlette ({where})", label)


# -- 6. the db-mysql name trap ----------------------------------------------------------------------------------------


def check_name_trap(report: Report, packages: dict[str, Package], built: dict[str, Artifacts], tmp: Path) -> None:
    """Install db-core[mysql] WITHOUT our db-mysql wheel: step 5's verification must reject the result."""
    if CORE not in built:
        raise CheckError(f"no {CORE} wheel was built")
    wheels = {name: artifacts.wheel for name, artifacts in built.items()}
    label = f"{CORE}[mysql] without our db-mysql wheel"
    venv = Venv.create(tmp, "name-trap")
    result = venv.install([f"{wheels[CORE]}[mysql]"])
    if result.returncode == 0:
        report.info(f"the resolver picked: {', '.join(p for p in picked(result) if 'file://' not in p)}")
    else:
        report.info(f"the resolver failed: {last_line(result)}")
    expected = siblings_pulled_in(packages, CORE, ["mysql"])
    problems = verify_ours(venv.installed(), expected, packages, wheels)
    if problems:
        report.ok(f"{label}: the verification of step 5 rejects it: {'; '.join(problems)}")
    else:
        report.fail(f"{label}: the verification of step 5 accepted it: it cannot tell the index's db-mysql from ours")


# -- 7. lowest supported versions -------------------------------------------------------------------------------------

LOWEST = (CORE, "db-sqlite")
# Extras whose requirements are held at their lower bounds too: the conformance kit runs there.
LOWEST_EXTRAS = {CORE: ("testing",)}

# db-sqlite through db_core's conformance kit, as a connector author runs it (DB_NAME from the environment).
CONFORMANCE_TEST = """
from db_core.testing import Capabilities, ConnectorSuite


class TestSQLiteAtLowestVersions(ConnectorSuite):
    connector = "sqlite"
    capabilities = Capabilities(network=False, savepoints=True, statement_timeout=True)
    slow_query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c"
    )
"""


def smoke_test(venv: Venv) -> subprocess.CompletedProcess[str]:
    """db_core's conformance kit for db-sqlite in ``venv``, on a fresh SQLite file; exit status 0 when it passes."""
    test = venv.work / "test_lowest_versions.py"
    test.write_text(CONFORMANCE_TEST, encoding="utf-8")
    for leftover in venv.work.glob("kit.db*"):
        leftover.unlink()
    return venv.command(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", test, env={"DB_NAME": str(venv.work / "kit.db")}
    )


@dataclass(frozen=True)
class Bound:
    """A third-party requirement of one of our packages, and the lowest version it admits."""

    package: str
    req: Requirement
    lowest: Version | None

    def pinned(self) -> str:
        """The requirement held at its lower bound, e.g. ``sqlalchemy[asyncio]==2.0.30``."""
        extras = f"[{','.join(sorted(self.req.extras))}]" if self.req.extras else ""
        return f"{self.req.name}{extras}=={self.lowest}"


def check_lowest_versions(report: Report, packages: dict[str, Package], built: dict[str, Artifacts], tmp: Path) -> None:
    """db-core and db-sqlite with their dependencies at the lower bounds they declare pass :func:`smoke_test`."""
    missing = [name for name in LOWEST if name not in built]
    if missing:
        raise CheckError(f"no wheel was built for {', '.join(missing)}")
    wheels = [built[name].wheel for name in LOWEST]
    bounds = [
        Bound(name, req, lower_bound(req))
        for name in LOWEST
        for req in (*packages[name].dependencies, *lowest_extra_requirements(packages[name]))
        if canonicalize_name(req.name) not in packages
    ]
    for bound in bounds:
        if bound.lowest is None:
            report.fail(f"{bound.package}: {bound.req} declares no lower bound")
    # uv counts only the requirements it is given as direct ones, not the dependencies of a
    # wheel file: name the third-party requirements too, so that lowest-direct lowers them.
    venv = Venv.create(tmp, "lowest")
    result = venv.install([*wheels, *(str(b.req) for b in bounds)], lowest=True)
    if result.returncode != 0:
        report.fail(f"installing the lowest versions failed: {output_tail(result)}")
        diagnose_lower_bounds(report, bounds, wheels, tmp)
        return
    found = venv.installed()
    report.info("installed: " + ", ".join(f"{name} {info.version}" for name, info in sorted(found.items())))
    for bound in bounds:
        got = found.get(canonicalize_name(bound.req.name))
        if got is None or bound.lowest is None or not same_version(got.version, str(bound.lowest)):
            report.fail(f"{bound.package}: {bound.req} got {got.version if got else 'nothing'}, not its lower bound")
        else:
            report.ok(f"{bound.package}: {bound.req} -> {bound.req.name} {got.version}")
    ours = {name: built[name].wheel for name in LOWEST}
    report.expect(verify_ours(found, set(LOWEST), packages, ours), f"{' and '.join(LOWEST)} are ours", "lowest")
    result = smoke_test(venv)
    if result.returncode == 0:
        report.ok(f"conformance kit (db-sqlite) with the lowest versions: {last_line(result)}")
    else:
        report.fail(f"conformance kit (db-sqlite) with the lowest versions: {output_tail(result)}")
        diagnose_lower_bounds(report, bounds, wheels, tmp)


def lowest_extra_requirements(package: Package) -> Iterator[Requirement]:
    """The requirements of ``package``'s extras named in :data:`LOWEST_EXTRAS`."""
    for extra in LOWEST_EXTRAS.get(package.name, ()):
        yield from package.extras[extra]


def diagnose_lower_bounds(report: Report, bounds: Sequence[Bound], wheels: Sequence[Path], tmp: Path) -> None:
    """Name the lower bounds that do not hold: each one alone at its bound, the rest at their newest."""
    liars = 0
    for bound in bounds:
        if bound.lowest is None:
            continue
        venv = Venv.create(tmp, f"lowest-{bound.req.name}")
        # The others named too (at their newest): the extras' ones (pytest) come with no wheel.
        others = [str(other.req) for other in bounds if other is not bound]
        result = venv.install([*wheels, bound.pinned(), *others])
        error: str | None
        if result.returncode != 0:
            error = last_line(result)
        else:
            smoke = smoke_test(venv)
            error = None if smoke.returncode == 0 else last_line(smoke)
        if error is None:
            report.info(f"{bound.package}: {bound.req} holds ({bound.pinned()} passes alone)")
        else:
            liars += 1
            report.fail(f"lower bound {bound.req} of {bound.package} does not hold: with {bound.pinned()}: {error}")
    if not liars:
        report.fail("each lower bound holds alone, but not all of them together")


# -- main -------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run every step and print the summary; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (artifacts and venvs)")
    args = parser.parse_args(argv)

    report = Report()
    with report.step("0. packages"):
        packages = load_packages()
        report.ok(", ".join(f"{p.name} {p.version}" for p in packages.values()))
    if report.steps[-1].failed:
        return report.summary()

    tmp = Path(tempfile.mkdtemp(prefix="release-check-"))
    try:
        with report.step("1. versions"):
            check_versions(report, packages)
        with report.step("2. db-core extras"):
            check_core_extras(report, packages)
        with report.step("3. sibling ranges"):
            check_sibling_ranges(report, packages)
        built: dict[str, Artifacts] = {}
        with report.step("4. build and twine check"):
            built = check_build(report, packages, tmp / "dist")
        with report.step("5. installs from our wheels"):
            check_installs(report, packages, built, tmp)
        with report.step("6. the db-mysql name trap"):
            check_name_trap(report, packages, built, tmp)
        with report.step("7. lowest versions"):
            check_lowest_versions(report, packages, built, tmp)
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())
