"""Promises the project makes about itself: the README's two commands, CI, packaging."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_readme_has_exactly_two_commands_run_and_test():
    assert readme_commands() == ["make run", "make test"]


def test_ci_runs_the_readmes_test_command():
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()
             if l.strip() and not l.strip().startswith("#")]
    commands = [l for l in lines if not l.startswith(("set ", "cd ", "export "))]
    assert commands == [readme_commands()[1]]


def test_every_runtime_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", dep), f"not pinned: {dep}"


def test_makefile_installs_torch_before_the_project():
    text = (ROOT / "Makefile").read_text()
    assert text.index("install -q torch==2.13.0") < text.index("install -q -e .")


def test_no_pickle_weights_in_the_repository():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = [p for p in tracked if Path(p).suffix in (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")]
    assert not bad, bad


def test_compose_file_runs_the_readmes_scaling_out_roles():
    import yaml  # a dependency of gradio and huggingface_hub

    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "web", "bot", "worker"}
    worker = services["worker"]
    assert worker["command"] == ["statuary", "worker"] and worker["deploy"]["replicas"] >= 2
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["web"]["command"][:2] == ["statuary", "webui"] and services["bot"]["command"] == ["statuary", "bot"]
    for role in ("web", "bot", "worker"):  # one broker, one database, one shared data folder
        env = services[role]["environment"]
        assert env["STATUARY_BROKER_URL"] == "redis://redis:6379/0" and env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert services[role]["volumes"] == ["data:/data"] and env["STATUARY_DATA_DIR"] == "/data"
    readme = (ROOT / "README.md").read_text().split("## Scaling out", 1)[1]
    for command in ("statuary worker", "statuary webui", "statuary bot", "statuary status"):
        assert command in readme
