"""The GitHub Actions workflows: their structure, and their steps run as the runner runs them.

The sandbox job of retrain.yml has no ``${{ }}`` expressions, so its ``run:`` steps are executed
here verbatim, in order, with ``bash --noprofile --norc -eo pipefail`` (what ``shell: bash``
means on a runner) and the runner's files (GITHUB_ENV, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY). Its
``uses: ./`` step runs the repository's composite action (action.yml) the way the runner does:
each ``run:`` step of the action with its ``${{ inputs.* }}`` replaced by the step's ``with:``
values or the inputs' defaults (setting up Python and installing are left out: this environment
has the package installed already).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from vertex_tuner.sandbox import Sandbox, SandboxInfo

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
SPECS = sorted(f"jobs/{p.name}" for p in (REPO / "jobs").glob("*.yaml"))
SHA_PIN = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+$")


def load(name: str) -> dict[str, Any]:
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True)
    return doc


def all_steps(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, body in doc["jobs"].items() for step in body["steps"]]


def step_named(job: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in job["steps"] if s.get("name") == name]
    (step,) = found
    return step


# --- structure -------------------------------------------------------------------------------


def load_action() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "action.yml").read_text())
    return doc


@pytest.mark.parametrize(
    "path", [WORKFLOWS / "ci.yml", WORKFLOWS / "retrain.yml", REPO / "action.yml"]
)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    text = path.read_text()
    uses = [line for line in text.splitlines() if re.match(r"^\s*(- )?uses:", line)]
    assert uses
    for line in uses:
        assert SHA_PIN.match(line) or re.match(r"^\s*uses: \./ # ", line), line


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_checkouts_keep_no_credentials(name: str) -> None:
    checkouts = [s for _, s in all_steps(load(name)) if s.get("uses", "").startswith("actions/ch")]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_permissions_are_none_by_default_and_read_only_per_job(name: str) -> None:
    doc = load(name)
    assert doc["permissions"] == {}
    for job_id, job in doc["jobs"].items():
        granted = dict(job["permissions"])
        if (name, job_id) == ("retrain.yml", "retrain"):
            assert granted.pop("id-token") == "write"
        assert granted == {"contents": "read"}, job_id


def test_only_the_cloud_job_can_ask_for_an_oidc_token() -> None:
    for name in ("ci.yml", "retrain.yml"):
        text = (WORKFLOWS / name).read_text()
        expected = 1 if name == "retrain.yml" else 0
        assert len(re.findall(r"id-token:\s*write", text)) == expected


def test_retrain_triggers() -> None:
    on = load("retrain.yml")["on"]
    (schedule,) = on["schedule"]
    minute, hour, day_of_month, month, day_of_week = schedule["cron"].split()
    # One fixed minute, hour and weekday: once a week.
    assert [minute.isdigit(), hour.isdigit(), day_of_week.isdigit()] == [True, True, True]
    assert (day_of_month, month) == ("*", "*")
    spec_input = on["workflow_dispatch"]["inputs"]["spec"]
    assert spec_input["type"] == "choice" and spec_input["default"] == "all"
    assert spec_input["options"] == ["all", *SPECS]
    assert on["workflow_dispatch"]["inputs"]["retry_failed"]["type"] == "boolean"
    assert on["push"] == {"branches": ["main"], "paths": ["jobs/**"]}
    assert "jobs/**" in on["pull_request"]["paths"]


def test_retrain_jobs_split_between_pull_requests_and_the_cloud() -> None:
    jobs = load("retrain.yml")["jobs"]
    assert jobs["sandbox"]["if"] == "github.event_name == 'pull_request'"
    for cloud in ("specs", "retrain"):
        assert jobs[cloud]["if"] == "github.event_name != 'pull_request'"
    assert jobs["retrain"]["needs"] == "specs"
    assert jobs["retrain"]["strategy"]["matrix"] == "${{ fromJSON(needs.specs.outputs.matrix) }}"
    # Hosted jobs stop at 6 hours: the wait gives up well before the job is killed.
    assert jobs["retrain"]["timeout-minutes"] < 360
    assert step_named(jobs["retrain"], "Retrain")["with"]["wait-timeout"] == "5h"
    # The state that lets a later run resume lives in Cloud Storage, not on the runner.
    assert jobs["retrain"]["env"]["VERTEX_TUNER_REGISTRY"].startswith("gs://")


def test_one_run_per_spec_at_a_time() -> None:
    concurrency = load("retrain.yml")["jobs"]["retrain"]["concurrency"]
    assert concurrency == {"group": "retrain-${{ matrix.key }}", "cancel-in-progress": False}


def test_the_cloud_job_authenticates_with_workload_identity_only() -> None:
    job = load("retrain.yml")["jobs"]["retrain"]
    retrain = step_named(job, "Retrain")
    assert retrain["uses"] == "./"
    assert {k: v for k, v in retrain["with"].items() if "identity" in k or "account" in k} == {
        "workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
        "service_account": "${{ vars.GCP_SERVICE_ACCOUNT }}",
    }
    assert "secrets." not in str(retrain)
    # After checkout (which would delete the credentials file).
    uses = [s.get("uses", "") for s in job["steps"]]
    assert uses[0].startswith("actions/checkout@") and uses.index("./") > 0
    # Inside the action: install first, then authenticate, so no build code sees credentials.
    steps = load_action()["runs"]["steps"]
    names = [s.get("name") or s.get("uses", "").split("@")[0] for s in steps]
    assert names == [
        "actions/setup-python",
        "Install vertex-tuner",
        "google-github-actions/auth",
        "Retrain",
    ]
    auth = steps[2]
    assert auth["if"] == "inputs.workload_identity_provider != ''"
    assert auth["with"]["workload_identity_provider"] == "${{ inputs.workload_identity_provider }}"
    assert job["env"]["VERTEX_TUNER_BUCKET"] == "${{ vars.VERTEX_TUNER_BUCKET }}"


def test_both_retrain_jobs_use_the_action() -> None:
    jobs = load("retrain.yml")["jobs"]
    cloud = step_named(jobs["retrain"], "Retrain")
    sandbox = step_named(jobs["sandbox"], "Retrain every spec against the sandbox")
    assert cloud["uses"] == sandbox["uses"] == "./"
    assert cloud["with"]["specs"] == "${{ matrix.spec }}"
    assert sandbox["with"] == {
        "specs": "jobs/*.yaml",
        "sandbox": "true",
        "wait-timeout": "5m",
        "out": "retrain-out",
    }
    uploads = [s for s in jobs["retrain"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert uploads[0]["if"] == "always()" and uploads[0]["with"]["path"] == "retrain-out/"
    # The action's outputs are the retrain step's, which the notification reads.
    outputs = load_action()["outputs"]
    assert set(outputs) == {"outcome", "message", "run_id", "spec_name"}
    notify = step_named(jobs["retrain"], "Notify")
    assert "steps.retrain.outputs.outcome" in notify["env"]["OUTCOME"]


def test_the_action_installs_itself_at_its_own_ref() -> None:
    install = step_named(load_action()["runs"], "Install vertex-tuner")
    assert install["env"] == {
        "ACTION_PATH": "${{ github.action_path }}",
        "LOCKED": "${{ inputs.locked }}",
    }
    assert '"$ACTION_PATH"' in install["run"]


# --- the hash-pinned locks the action installs from -------------------------------------------

REQUIREMENTS = REPO / "requirements"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(?:\s*;\s*(.+?))?")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None


def read_lock(name: str) -> list[Pin]:
    """A lock's requirements: `name==version ; marker` and its hashes, one per entry."""
    text = (REQUIREMENTS / name).read_text()
    pins = []
    # An entry is a line and its backslash continuations; comments (`# via`) stand alone.
    for entry in re.sub(r"\\\n", " ", text).splitlines():
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        requirement, *options = re.split(r"\s+(?=--)", entry.strip())
        match = PIN.fullmatch(requirement)
        assert match, f"{name}: not a pin to one version: {entry[:80]}"
        assert options and all(HASH.fullmatch(o) for o in options), f"{name}: {requirement}"
        package, version, marker = match.groups()
        pins.append(
            Pin(
                canonicalize_name(package),
                Version(version),
                Marker(marker) if marker else None,
            )
        )
    assert pins, name
    return pins


def environments() -> list[dict[str, str]]:
    """The platforms a runner (or a developer) may be, on each Python the locks cover."""
    platforms = [
        ("linux", "Linux", "x86_64"),
        ("linux", "Linux", "aarch64"),
        ("darwin", "Darwin", "arm64"),
        ("darwin", "Darwin", "x86_64"),
        ("win32", "Windows", "AMD64"),
    ]
    pythons = ["3.11.9", "3.12.10", "3.13.5", "3.14.0"]
    default = load_action()["inputs"]["python-version"]["default"]
    assert any(p.startswith(f"{default}.") for p in pythons), default
    envs = []
    for sys_platform, system, machine in platforms:
        for python in pythons:
            env = dict(default_environment())
            env.update(
                sys_platform=sys_platform,
                platform_system=system,
                platform_machine=machine,
                os_name="nt" if sys_platform == "win32" else "posix",
                python_full_version=python,
                python_version=".".join(python.split(".")[:2]),
                implementation_name="cpython",
                platform_python_implementation="CPython",
            )
            envs.append(env)
    return envs


def applies(marker: Marker | None, env: dict[str, str]) -> bool:
    return marker is None or marker.evaluate(env)


def test_every_entry_of_the_locks_is_one_version_with_its_hashes() -> None:
    for name in ("retrain.lock", "retrain-build.lock"):
        pins = read_lock(name)
        # One entry per package, or one per Python where a package's releases part ways.
        for env in environments():
            chosen = [p.name for p in pins if applies(p.marker, env)]
            assert len(chosen) == len(set(chosen)), (name, env["python_full_version"])
        assert "vertex-tuner" not in {p.name for p in pins}


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("retrain.lock", PYPROJECT["project"]["dependencies"]),
        (
            "retrain-build.lock",
            [
                *PYPROJECT["build-system"]["requires"],
                *(
                    line
                    for line in (REQUIREMENTS / "retrain-build.in").read_text().splitlines()
                    if line.strip() and not line.startswith("#")
                ),
            ],
        ),
    ],
)
def test_the_locks_pin_what_pyproject_asks_for(lock: str, requirements: list[str]) -> None:
    """Not stale: every requirement is pinned, at a version it allows, wherever its marker holds."""
    pins = read_lock(lock)
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert not requirement.extras, line
        mine = [p for p in pins if p.name == name]
        assert mine, f"{lock} has no pin for {requirement.name}: run scripts/lock-retrain"
        for pin in mine:
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{lock} pins {name}=={pin.version}, which {line!r} excludes: "
                "run scripts/lock-retrain"
            )
        for env in environments():
            wanted = applies(requirement.marker, env)
            chosen = [p for p in mine if applies(p.marker, env)]
            assert len(chosen) == wanted, (lock, line, env["sys_platform"], env["platform_machine"])


def test_a_package_in_both_locks_is_pinned_at_one_version() -> None:
    build = {
        (p.name, p.marker and str(p.marker)): p.version for p in read_lock("retrain-build.lock")
    }
    for pin in read_lock("retrain.lock"):
        assert build.get((pin.name, pin.marker and str(pin.marker)), pin.version) == pin.version


def test_the_lock_is_the_runtime_dependencies_only() -> None:
    pinned = {p.name for p in read_lock("retrain.lock")}
    optional = PYPROJECT["project"]["optional-dependencies"]
    # Retraining needs no extra: `registry` (google-cloud-aiplatform) is for --mirror-vertex.
    for extra in ("registry", "dev", "bench"):
        for line in optional[extra]:
            assert canonicalize_name(Requirement(line).name) not in pinned, (extra, line)


def test_the_locks_say_how_to_regenerate_them() -> None:
    script = REPO / "scripts" / "lock-retrain"
    assert os.access(script, os.X_OK)
    for name in ("retrain.lock", "retrain-build.lock"):
        header = (REQUIREMENTS / name).read_text().split("\n\n", 1)[0]
        assert "#    scripts/lock-retrain\n" in header, name
        assert f"requirements/{name}" in script.read_text()
    if shutil.which("shellcheck") or (Path(sys.executable).parent / "shellcheck").exists():
        found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
        result = subprocess.run([found, str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_the_action_installs_from_the_locks_with_hashes_and_no_dependencies() -> None:
    action = load_action()
    assert action["inputs"]["locked"]["default"] == "true"
    script = step_named(action["runs"], "Install vertex-tuner")["run"]
    locked = script.split("true)", 1)[1].split(";;", 1)[0]
    commands = [
        " ".join(c.split())
        for c in re.sub(r"\\\n", " ", locked).splitlines()
        if c.strip() and not c.strip().startswith("#")
    ]
    assert len(commands) == 4, commands
    *installs, check = commands
    for command, lock in zip(installs, ["retrain-build.lock", "retrain.lock"], strict=False):
        assert command.startswith("python -m pip install ")
        assert {"--require-hashes", "--no-deps"} <= set(command.split()), command
        assert command.endswith(f'-r "$ACTION_PATH/requirements/{lock}"'), command
        assert (REQUIREMENTS / lock).is_file()
    # The back-ends come as wheels; what is built from source is built with them, not with
    # whatever an isolated build environment would fetch.
    assert "--only-binary :all:" in installs[0]
    assert "--no-build-isolation" in installs[1]
    itself = installs[2].split()
    assert itself[:4] == ["python", "-m", "pip", "install"] and itself[-1] == '"$ACTION_PATH"'
    assert {"--no-deps", "--no-build-isolation", "--no-index"} <= set(itself)
    assert check == "python -m pip check"


def test_the_sandbox_job_runs_as_written() -> None:
    """No expressions, so the test below runs exactly what the runner runs."""
    job = load("retrain.yml")["jobs"]["sandbox"]
    for step in job["steps"]:
        if "run" in step or step.get("uses") == "./":
            assert "${{" not in str(step.get("run", "")) + str(step.get("env", {})), step["name"]
            assert "${{" not in str(step.get("with", {})), step["name"]
    assert "${{" not in str(job["env"])
    # The action's run steps read only its inputs and github.action_path.
    for step in load_action()["runs"]["steps"]:
        for value in [step.get("run", ""), *step.get("env", {}).values()]:
            for expression in re.findall(r"\$\{\{(.*?)\}\}", str(value)):
                assert re.fullmatch(r" (inputs\.[\w-]+|github\.action_path) ", expression)


def test_every_spec_path_named_exists() -> None:
    named = set()
    for path in [*WORKFLOWS.glob("*.yml"), REPO / "docs" / "github-actions.md"]:
        named.update(re.findall(r"jobs/[\w.-]+\.ya?ml", path.read_text()))
    assert named
    for spec in named:
        assert (REPO / spec).is_file(), spec


def test_ci_checks_everything_on_every_python() -> None:
    doc = load("ci.yml")
    assert doc["on"]["pull_request"] is None and doc["on"]["push"] == {"branches": ["main"]}
    matrix = doc["jobs"]["test"]["strategy"]["matrix"]["python"]
    assert matrix == ["3.11", "3.12", "3.13"]
    # The oldest Python tested is the oldest the package admits (google-genai needs 3.11).
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'requires-python = ">={matrix[0]}"' in pyproject
    commands = [str(s.get("run", "")) for _, s in all_steps(doc)]
    for needed in (
        "ruff format --check .",
        "ruff check .",
        "mypy",
        "lint-imports",
        "vertex-tuner validate jobs/*.yaml",
        "scripts/lint-workflows",
        "python -m pytest",
    ):
        assert any(needed in c for c in commands), needed


def test_dependabot_keeps_the_pins_current() -> None:
    doc = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"] for u in doc["updates"]}
    assert {"github-actions", "npm"} <= ecosystems


# --- steps run as the runner runs them --------------------------------------------------------


@dataclass
class Runner:
    """The parts of a GitHub-hosted runner that `run:` steps see."""

    workspace: Path
    env: dict[str, str]
    groups: list[int] = field(default_factory=list)
    #: The stderr file of the step running now (or last).
    stderr_file: Path | None = None

    @classmethod
    def create(cls, tmp_path: Path, extra_env: dict[str, str] | None = None) -> Runner:
        workspace = tmp_path / "workspace"
        shutil.copytree(REPO / "jobs", workspace / "jobs")
        (tmp_path / "runner-temp").mkdir()
        env = {
            **os.environ,
            # The install step's console scripts, as setup-python puts them on PATH.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(tmp_path / "runner-temp"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            **(extra_env or {}),
        }
        (tmp_path / "summary.md").write_text("")
        return cls(workspace, env)

    def run(
        self,
        script: str,
        env: dict[str, str] | None = None,
        *,
        interrupt_when: Callable[[], bool] | None = None,
    ) -> Step:
        """One `run:` step: its own output and env files, its own process group.

        With ``interrupt_when``, the step's process group gets SIGINT (what a runner sends when
        a run is cancelled) as soon as that returns true.
        """
        temp = Path(self.env["RUNNER_TEMP"])
        n = len(self.groups)
        files = {x: temp / f"step{n}.{x}" for x in ("sh", "out", "env", "stdout", "stderr")}
        files["sh"].write_text(script)
        files["out"].write_text("")
        files["env"].write_text("")
        self.stderr_file = files["stderr"]
        with files["stdout"].open("w") as stdout, files["stderr"].open("w") as stderr:
            proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(files["sh"])],
                cwd=self.workspace,
                env={
                    **self.env,
                    **(env or {}),
                    "GITHUB_OUTPUT": str(files["out"]),
                    "GITHUB_ENV": str(files["env"]),
                },
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
            self.groups.append(proc.pid)
            if interrupt_when is not None:
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    if interrupt_when():
                        break
                    time.sleep(0.05)
                # Past the deadline too, so a condition that never comes fails the test quickly.
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=600)
        self.env.update(parse_env_file(files["env"].read_text()))
        return Step(
            proc.returncode,
            files["stdout"].read_text(),
            files["stderr"].read_text(),
            parse_env_file(files["out"].read_text()),
        )

    def stop(self) -> None:
        """End what the steps left running (the sandbox), as a runner does at the end of a job."""
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def last_stderr(self) -> str:
        return self.stderr_file.read_text() if self.stderr_file else ""

    @property
    def summary(self) -> str:
        return Path(self.env["GITHUB_STEP_SUMMARY"]).read_text()


@dataclass
class Step:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


def parse_env_file(text: str) -> dict[str, str]:
    """GITHUB_ENV / GITHUB_OUTPUT: NAME=value lines and NAME<<DELIMITER blocks."""
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, _, delimiter = line.partition("<<")
            block = []
            for item in lines:
                if item == delimiter:
                    break
                block.append(item)
            values[key] = "\n".join(block)
        elif line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_parse_env_file_reads_both_forms() -> None:
    assert parse_env_file("A=1\nB<<EOF\nx=y\nz\nEOF\nC=a=b\n") == {
        "A": "1",
        "B": "x=y\nz",
        "C": "a=b",
    }


def test_the_specs_job_picks_every_spec_or_the_one_asked_for(tmp_path: Path) -> None:
    runner = Runner.create(tmp_path)
    pick = step_named(load("retrain.yml")["jobs"]["specs"], "Pick")
    assert pick["env"] == {"ONLY": "${{ inputs.spec }}"}
    keys = {spec: Path(spec).stem for spec in SPECS}

    for only in ("", "all"):  # a schedule or a push has no inputs; the form's default is "all"
        step = runner.run(pick["run"], {"ONLY": only})
        assert step.returncode == 0, step.stderr
        assert orjson.loads(step.outputs["matrix"]) == {
            "include": [{"spec": s, "key": k} for s, k in keys.items()]
        }
    step = runner.run(pick["run"], {"ONLY": "jobs/ticket_triage.yaml"})
    assert orjson.loads(step.outputs["matrix"]) == {
        "include": [{"spec": "jobs/ticket_triage.yaml", "key": "ticket_triage"}]
    }
    step = runner.run(pick["run"], {"ONLY": "jobs/nothing.yaml"})
    assert step.returncode == 1
    assert step.stdout == "::error::no spec at jobs/nothing.yaml\n"


def test_the_install_step_runs_the_locked_commands_unless_told_not_to(tmp_path: Path) -> None:
    """The action's install step as written, with a `python` that records what it was asked."""
    runner = Runner.create(tmp_path)
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\necho "python $*" >>"$CALLS"\n')
    (stub / "python").chmod(0o755)
    install = step_named(load_action()["runs"], "Install vertex-tuner")
    calls = tmp_path / "calls"

    def run(locked: str) -> tuple[Step, list[str]]:
        calls.write_text("")
        env = {
            "ACTION_PATH": str(REPO),
            "LOCKED": locked,
            "CALLS": str(calls),
            "PATH": f"{stub}{os.pathsep}{runner.env['PATH']}",
        }
        step = runner.run(install["run"], env)
        return step, calls.read_text().splitlines()

    step, ran = run("true")
    assert step.returncode == 0, step.stderr
    q = "python -m pip install --quiet"
    assert ran == [
        f"{q} --require-hashes --no-deps --only-binary :all: "
        f"-r {REPO}/requirements/retrain-build.lock",
        f"{q} --require-hashes --no-deps --no-build-isolation -r {REPO}/requirements/retrain.lock",
        f"{q} --no-deps --no-build-isolation --no-index {REPO}",
        "python -m pip check",
    ]
    step, ran = run("false")
    assert step.returncode == 0 and ran == [f"{q} {REPO}"]
    step, ran = run("yes")
    assert step.returncode == 1 and ran == []
    assert step.stdout == '::error::the input locked is "true" or "false"\n'


def run_action(runner: Runner, inputs: dict[str, str], **kwargs: Any) -> Step:
    """The composite action's run steps, as the runner runs them (see the module docstring)."""
    action = load_action()
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    values.update(inputs)
    assert set(values) == set(action["inputs"]), set(values) ^ set(action["inputs"])

    def expand(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name == "github.action_path":
                return str(REPO)
            return values[name.removeprefix("inputs.")]

        return re.sub(r"\$\{\{(.*?)\}\}", one, text)

    steps = [
        s for s in action["runs"]["steps"] if "run" in s and s["name"] != "Install vertex-tuner"
    ]
    assert [s["name"] for s in steps] == ["Retrain"]
    (step,) = steps
    env = {k: expand(str(v)) for k, v in step.get("env", {}).items()}
    return runner.run(step["run"], env, **kwargs)


@pytest.mark.sandbox
def test_the_sandbox_job_retrains_every_spec_then_finds_nothing_changed(tmp_path: Path) -> None:
    """Every step of the sandbox job, in order, then its retrain step again (the next run).

    The install step is the one not run: this environment has the package installed already.
    """
    workflow = load("retrain.yml")
    job = workflow["jobs"]["sandbox"]
    runner = Runner.create(tmp_path, {**job["env"]})
    ran = []
    try:
        for step in job["steps"]:
            if step.get("uses") == "./":
                result = run_action(runner, step["with"])
            elif "run" in step and step["name"] != "Install":
                result = runner.run(step["run"], step.get("env"))
            else:
                continue
            assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
            ran.append((step["name"], result))
        assert [name for name, _ in ran] == [
            "Start the sandbox",
            "Retrain every spec against the sandbox",
        ]
        assert runner.env["VERTEX_TUNER_SANDBOX"] == f"{runner.env['RUNNER_TEMP']}/sandbox.json"
        first = runner.summary
        outputs = ran[1][1].outputs
        records = {}
        for spec in SPECS:
            out = runner.workspace / "retrain-out" / Path(spec).stem
            record = orjson.loads((out / "record.json").read_bytes())
            outcome = orjson.loads((out / "outcome.json").read_bytes())
            records[spec] = record
            name, run_id = record["spec_name"], record["run_id"]
            assert record["state"] == "SUCCEEDED" and record["sandbox"] is True
            assert record["evaluation"]["gate"]["passed"] is True
            assert outcome["outcome"] == "promoted" and outcome["run_id"] == run_id
            assert orjson.loads((out / "evaluation.json").read_bytes())["run"] == run_id
            assert (
                f"## `{name}` ({spec})\n\n- plan: **create**, job `{record['job_name']}`" in first
            )
            assert (out / "report" / "report.md").read_text().rstrip() in first
            assert (
                f"✅ **promoted**: {name}@production → run {run_id} (it was at nothing)." in first
            )
        # GITHUB_OUTPUT keeps the last spec's values (ticket_triage sorts last).
        assert outputs["outcome"] == "promoted"
        assert outputs["run_id"] == records[SPECS[-1]]["run_id"]
        # The run store is the gs:// one, in the sandbox's Cloud Storage, as in the cloud job.
        assert not (Path(os.environ["VERTEX_TUNER_HOME"]) / "runs").exists()

        # The next scheduled run: the same data, so no new job and nothing to evaluate.
        retrain = step_named(job, "Retrain every spec against the sandbox")
        again = run_action(runner, retrain["with"])
        assert again.returncode == 0, again.stderr
        second = runner.summary[len(first) :]
        for spec, record in records.items():
            assert (
                f"## `{record['spec_name']}` ({spec})\n\n"
                f"- plan: **reuse**, job `{record['job_name']}`, run `{record['run_id']}`"
            ) in second
            assert (
                f"✅ **unchanged**: {record['spec_name']}@production already serves run "
                f"{record['run_id']}; nothing to evaluate or promote."
            ) in second
        assert "## Evaluation" not in second
        assert again.outputs["outcome"] == "unchanged"
    finally:
        runner.stop()


def _spec_copy(runner: Runner, name: str, **replace: str) -> str:
    """A copy of jobs/support_tone.yaml under another name (so another fingerprint)."""
    text = (runner.workspace / "jobs" / "support_tone.yaml").read_text()
    text = text.replace("name: support-tone", f"name: {name}")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = f"jobs/{name.replace('-', '_')}.yaml"
    (runner.workspace / path).write_text(text)
    return path


def _retrain(
    runner: Runner,
    spec: str,
    *,
    interrupt_when: Callable[[], bool] | None = None,
    **inputs: str,
) -> Step:
    return run_action(
        runner, {"specs": spec, "sandbox": "true", **inputs}, interrupt_when=interrupt_when
    )


@pytest.mark.sandbox
def test_over_budget_fails_with_the_reason_on_the_summary(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    runner = Runner.create(tmp_path)
    spec = _spec_copy(runner, "budget-check", **{"max_cost_usd: 50": "max_cost_usd: 0.01"})
    step = _retrain(runner, spec)
    assert step.returncode == 3
    # The base's announced retirement comes first, then the error.
    head, warning, rest = runner.summary.partition("> [!WARNING]\n> gemini-2.5-flash is announced")
    assert head == "## `jobs/budget_check.yaml`\n\n" and warning
    assert "--base-model gemini-3.5-flash\n\n```text\nerror: estimated cost " in rest
    # Counted in the sandbox, the estimate is calibrated: the budget is held to its upper end.
    assert "(calibrated; central $" in runner.summary
    assert "is over the budget of $0.01" in runner.summary
    last = (
        "❌ **submit refused: over budget** (exit 3: the cost estimate is over "
        "`budget.max_cost_usd` (nothing was uploaded))"
    )
    assert runner.summary.strip().splitlines()[-1] == last
    assert step.outputs == {
        "outcome": "over-budget",
        "message": last.replace("**", ""),
        "run_id": "",
        "spec_name": "budget-check",
    }
    assert "::error title=retrain jobs/budget_check.yaml::submit refused" in step.stdout
    outcome = orjson.loads(
        (runner.workspace / "retrain-out/budget_check/outcome.json").read_bytes()
    )
    assert outcome["outcome"] == "over-budget" and outcome["exit_code"] == 3


@pytest.mark.sandbox
def test_a_failed_gate_fails_and_leaves_production_alone(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    runner = Runner.create(tmp_path)
    gate = 'promote_if: "tuned.exact_match >= 0.99"\n'
    shipped = (runner.workspace / "jobs" / "support_tone.yaml").read_text()
    (line,) = [f"{x}\n" for x in shipped.splitlines() if x.lstrip().startswith("promote_if:")]
    spec = _spec_copy(runner, "gate-check", **{line.lstrip(): gate})
    step = _retrain(runner, spec)
    assert step.returncode == 5, step.stderr
    summary = runner.summary
    assert "## Evaluation of" in summary and "❌" in summary
    assert "```text\nerror: the evaluation gate failed: " in summary
    assert summary.rstrip().endswith(
        "❌ **the evaluation gate failed; gate-check@production stays at nothing** "
        "(exit 5: the evaluation gate failed (the alias was not moved))"
    )
    assert step.outputs["outcome"] == "gate-failed"
    out = runner.workspace / "retrain-out/gate_check"
    record = orjson.loads((out / "record.json").read_bytes())
    assert record["evaluation"]["gate"]["passed"] is False
    assert record["run_id"] == step.outputs["run_id"]
    assert orjson.loads((out / "outcome.json").read_bytes())["previous_run_id"] is None


@pytest.mark.sandbox
def test_a_wait_that_times_out_succeeds_and_the_next_run_attaches(tmp_path: Path) -> None:
    with Sandbox(job_seconds=600) as info:
        runner = Runner.create(
            tmp_path, {"VERTEX_TUNER_SANDBOX": orjson.dumps(info.to_json()).decode()}
        )
        first = _retrain(runner, "jobs/ticket_triage.yaml", **{"wait-timeout": "1s"})
        assert first.returncode == 0, first.stderr
        assert first.outputs["outcome"] == "running"
        assert "- plan: **create**" in runner.summary
        assert runner.summary.rstrip().endswith(
            "⏳ **still running**: still running after 1s: the job keeps running in Vertex, and "
            "the next retrain attaches to it (the run store carries the state)."
        )
        record = orjson.loads(
            (runner.workspace / "retrain-out/ticket_triage/record.json").read_bytes()
        )
        assert record["state"] in ("QUEUED", "PENDING", "RUNNING")

        second = _retrain(runner, "jobs/ticket_triage.yaml", **{"wait-timeout": "1s"})
        assert second.returncode == 0, second.stderr
        assert second.outputs["outcome"] == "running"
        assert second.outputs["run_id"] == first.outputs["run_id"]
        assert f"- plan: **attach**, job `{record['job_name']}`" in runner.summary

        # A cancelled run (SIGINT) detaches: the job keeps running for the next run to attach to.
        def waiting() -> bool:  # the wait has read the job's state once
            return re.search(r"\d+: QUEUED", runner.last_stderr()) is not None

        third = _retrain(
            runner, "jobs/ticket_triage.yaml", **{"wait-timeout": "10m"}, interrupt_when=waiting
        )
        assert third.returncode == 130, third.stderr
        assert third.outputs["outcome"] == "interrupted"
        assert third.outputs["run_id"] == first.outputs["run_id"]
        assert runner.summary.rstrip().endswith(
            f"❌ **detached; {record['job_name']} keeps running in Vertex, and the next retrain "
            "attaches to it** (exit 130: interrupted (Ctrl-C); a created job keeps running, and "
            "the message says how to resume)"
        )
