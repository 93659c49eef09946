"""What cfn-lint cannot check in template.yaml: that it matches the code.

The template is read with cfn-lint's own loader (intrinsics as {"Ref": …}); the
code is read as text (the workspace's binaries from `cargo metadata`, the routes
each function serves, the settings the shared crate reads). No AWS call, no
network: run by scripts/test.sh beside cfn-lint."""

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE, _ = decode(str(ROOT / "template.yaml"))
RESOURCES = TEMPLATE["Resources"]
FUNCTIONS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}


def workspace_binaries() -> dict[str, Path]:
    """Every binary of the function packages (functions/*): name → main.rs."""
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    bins = {}
    for package in json.loads(out)["packages"]:
        for target in package["targets"]:
            path = Path(target["src_path"])
            if "bin" in target["kind"] and (ROOT / "functions") in path.parents:
                bins[target["name"]] = path
    return bins


BINARIES = workspace_binaries()


def binary_of(function: dict) -> str:
    return function["Metadata"]["BuildProperties"]["Binary"]


def source(path: Path) -> str:
    return path.read_text()


def shared_sources() -> str:
    """The shared crate's code, without its tests."""
    return "\n".join(
        source(p) for p in sorted((ROOT / "shared" / "src").rglob("*.rs")) if not p.name.endswith("tests.rs")
    )


def test_every_function_is_a_workspace_binary_built_by_cargo_lambda():
    assert FUNCTIONS, "the template has functions"
    globals_ = TEMPLATE["Globals"]["Function"]
    assert (globals_["Runtime"], globals_["Handler"]) == ("provided.al2023", "bootstrap")
    for name, function in FUNCTIONS.items():
        assert function["Metadata"]["BuildMethod"] == "rust-cargolambda", name
        assert binary_of(function) in BINARIES, f"{name}: no workspace binary {binary_of(function)}"
        assert function["Properties"]["CodeUri"] == ".", name
    deployed = {binary_of(f) for f in FUNCTIONS.values()}
    assert deployed == set(BINARIES), f"binaries never deployed: {set(BINARIES) - deployed}"


def test_every_function_logs_json_to_its_own_group_with_retention():
    groups = set()
    for name, function in FUNCTIONS.items():
        logging = function["Properties"]["LoggingConfig"]
        assert logging["LogFormat"] == "JSON", name
        group = logging["LogGroup"]["Ref"]
        resource = RESOURCES[group]
        assert resource["Type"] == "AWS::Logs::LogGroup", name
        assert resource["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        assert resource.get("Condition") == function.get("Condition"), f"{name} and {group} exist together"
        groups.add(group)
    assert len(groups) == len(FUNCTIONS), "one group per function"


def delivery(main_rs: str) -> str | None:
    if "Delivery::Streamed" in main_rs:
        return "RESPONSE_STREAM"
    if "Delivery::Buffered" in main_rs:
        return "BUFFERED"
    return None


def test_streamed_routes_stream_and_the_rest_are_buffered():
    for name, function in FUNCTIONS.items():
        expected = delivery(source(BINARIES[binary_of(function)]))
        url = function["Properties"].get("FunctionUrlConfig")
        if expected is None:
            assert url is None, f"{name} serves no HTTP but has a function URL"
            continue
        assert url is not None, f"{name} serves HTTP but has no function URL"
        assert url["InvokeMode"] == expected, name
        # OpenAI SDKs cannot sign requests: the service authenticates callers.
        assert url["AuthType"] == "NONE", name
        # The application answers CORS (routes/mod.rs): the URL's own setting
        # would duplicate Access-Control-Allow-Origin.
        assert "Cors" not in url, name
        if expected == "RESPONSE_STREAM":
            assert function["Properties"]["Timeout"] >= 300, f"{name} streams: give it time"


def routes_of(module: str) -> set[str]:
    text = source(ROOT / "shared" / "src" / "routes" / f"{module}.rs")
    paths = set(re.findall(r'\.route\(\s*"([^"]+)"', text))
    for merged in re.findall(r"super::(\w+)::routes\(", text):
        paths |= routes_of(merged)
    return paths


def test_the_emulator_routes_every_path_to_a_function_that_serves_it():
    cargo = source(ROOT / "Cargo.toml")
    table = cargo.split("[workspace.metadata.lambda.watch.router]", 1)[1]
    router = dict(re.findall(r'^"([^"]+)"\s*=\s*"([^"]+)"', table, re.M))
    served_by: dict[str, set[str]] = {}
    for binary, main_rs in BINARIES.items():
        modules = re.findall(r"routes::(\w+)::router", source(main_rs))
        for module in modules:
            for path in routes_of(module):
                served_by.setdefault(path, set()).add(binary)
    assert served_by, "the functions serve routes"
    for path, binaries in served_by.items():
        assert path in router, f"cargo lambda watch does not route {path}"
        assert router[path] in binaries, f"{path} is routed to {router[path]}, served by {binaries}"


def test_the_lambda_build_is_the_release_profile_cargo_toml_states():
    """cargo-lambda (so `sam build`) fills in `strip`, `lto`, `codegen-units`
    and `panic = "abort"` when the release profile leaves them out: all four
    are named, so the bootstraps are built as Cargo.toml says. The
    self-hosted server's own profile unwinds, and the Dockerfile uses it."""
    profiles = tomllib.loads(source(ROOT / "Cargo.toml"))["profile"]
    release = profiles["release"]
    for key in ("strip", "lto", "codegen-units", "panic"):
        assert key in release, f"[profile.release] does not name {key}: cargo-lambda would choose it"
    assert release["panic"] == "abort"
    assert profiles["server"] == {"inherits": "release", "panic": "unwind"}
    assert re.search(r"cargo build --profile server\b.*-p server", source(ROOT / "Dockerfile"))


def test_sam_builds_a_function_without_the_servers_credential_chain():
    """`sam build` runs `cargo lambda build --release --bin <function>` with
    no package named, so features are unified over the workspace's default
    members: the server (whose `credential-chain` feature links aws-config's
    whole chain) must not be one of them, and every function must."""
    workspace = tomllib.loads(source(ROOT / "Cargo.toml"))["workspace"]
    defaults = set(workspace["default-members"])
    assert "server" not in defaults
    functions = {f"functions/{d.name}" for d in (ROOT / "functions").iterdir() if d.is_dir()}
    assert functions <= defaults, functions - defaults
    assert defaults == set(workspace["members"]) - {"server"}
    server = tomllib.loads(source(ROOT / "server" / "Cargo.toml"))
    assert "credential-chain" in server["dependencies"]["hailuo-gateway"]["features"]
    for fn in functions:
        manifest = tomllib.loads(source(ROOT / fn / "Cargo.toml"))
        gateway = manifest["dependencies"]["hailuo-gateway"]
        assert not isinstance(gateway, dict) or "credential-chain" not in gateway.get("features", []), fn


CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


def glob_matches(pattern: str, path: str) -> bool:
    """CloudFront path patterns: `*` any characters, `?` one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path) is not None


def test_cloudfront_sends_every_route_to_its_function_uncached():
    config = RESOURCES["Distribution"]["Properties"]["DistributionConfig"]
    # Origin id → the function whose URL it is.
    origin_function = {}
    for origin in config["Origins"]:
        url_refs = json.dumps(origin["DomainName"])
        found = [n for n in FUNCTIONS if f'"{n}Url"' in url_refs or f'"{n}Url.FunctionUrl"' in url_refs]
        assert len(found) == 1, origin
        origin_function[origin["Id"]] = binary_of(FUNCTIONS[found[0]])
        custom = origin["CustomOriginConfig"]
        assert custom["OriginProtocolPolicy"] == "https-only"
        assert custom["OriginReadTimeout"] == 60, "the longest wait between bytes CloudFront allows by default"
    behaviours = config["CacheBehaviors"] + [{**config["DefaultCacheBehavior"], "PathPattern": "*"}]
    for b in behaviours:
        assert b["CachePolicyId"] == CACHING_DISABLED, b["PathPattern"]
        assert b["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST, b["PathPattern"]
        assert {"GET", "POST", "OPTIONS"} <= set(b["AllowedMethods"]), b["PathPattern"]
    served = 0
    for binary, main_rs in BINARIES.items():
        for module in re.findall(r"routes::(\w+)::router", source(main_rs)):
            for path in routes_of(module):
                concrete = path.replace("{id}", "hailuo")
                # CloudFront takes the first behaviour that matches, in order.
                first = next(b for b in behaviours if glob_matches(b["PathPattern"], concrete))
                target = origin_function[first["TargetOriginId"]]
                assert target == binary or path in routes_of_binary(target), (
                    f"{path} goes to {target}, which does not serve it"
                )
                served += 1
    assert served >= 10


def routes_of_binary(binary: str) -> set[str]:
    paths = set()
    for module in re.findall(r"routes::(\w+)::router", source(BINARIES[binary])):
        paths |= routes_of(module)
    return paths


def test_the_base_url_output_is_the_distribution_with_v1():
    value = json.dumps(TEMPLATE["Outputs"]["OpenAIBaseUrl"]["Value"])
    assert "Distribution.DomainName}/v1" in value and "FunctionUrl}v1" in value


def env_names(function: dict) -> set[str]:
    own = function["Properties"].get("Environment", {}).get("Variables", {})
    return set(own) | set(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])


def test_every_setting_the_template_passes_is_one_the_code_reads():
    code = shared_sources()
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', code))
    # Settings read through a prefix (HAILUO_ORIGIN, AGENT_USER_AGENT, …).
    for prefix in re.findall(r'from_lookup\(\s*env,\s*"([A-Z]+)"', code):
        read |= {f"{prefix}_{suffix}" for suffix in re.findall(r'"\{prefix\}_([A-Z_]+)"', code)}
    if "try_from_default_env" in code:
        read.add("RUST_LOG")
    for name, function in FUNCTIONS.items():
        unknown = env_names(function) - read
        assert not unknown, f"{name} is given settings the code never reads: {unknown}"


def refs(node) -> set[str]:
    """Every Ref in a template node."""
    found = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                found.add(v)
            found |= refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= refs(v)
    return found


def test_every_parameter_is_used():
    used = refs({k: v for k, v in TEMPLATE.items() if k != "Parameters"})
    unused = set(TEMPLATE["Parameters"]) - used
    assert not unused, f"parameters nothing uses: {unused}"


def statements() -> list[dict]:
    found = []
    for name, resource in RESOURCES.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            found += [(name, s) for s in props["PolicyDocument"]["Statement"]]
        for policy in props.get("Policies", []) if resource["Type"] == "AWS::Serverless::Function" else []:
            if isinstance(policy, dict) and "Statement" in policy:
                found += [(name, s) for s in policy["Statement"]]
    return found


def test_iam_is_scoped_to_the_two_secrets_and_the_accounts_table():
    found = statements()
    assert found, "the template grants something"
    secrets = {"TokensSecretArn", "TokensSecret", "TokenStatusSecret"}
    for name, statement in found:
        assert statement["Effect"] == "Allow", name
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(a.startswith("dynamodb:") for a in actions):
            # The pool's calls (pool/table.rs), on the accounts table alone.
            assert set(actions) <= {"dynamodb:UpdateItem", "dynamodb:BatchGetItem", "dynamodb:Scan"}, actions
            assert statement["Resource"] == {"Fn::GetAtt": ["AccountsTable", "Arn"]}, (name, statement["Resource"])
            continue
        assert all(a.startswith("secretsmanager:") and "*" not in a for a in actions), (name, actions)
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            assert isinstance(resource, dict) and refs(resource) <= secrets and refs(resource), (name, resource)
        if "secretsmanager:PutSecretValue" in actions:
            assert all(refs(r) == {"TokenStatusSecret"} for r in resources), "only the status document is written"
    # Functions get secrets only through those statements or the managed policy.
    for name, function in FUNCTIONS.items():
        for policy in function["Properties"].get("Policies", []):
            assert isinstance(policy, dict), f"{name}: a named policy template grants more than the secrets"


def test_the_functions_that_lease_accounts_may_and_only_the_admin_view_scans():
    table = RESOURCES["AccountsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "account", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    code = source(ROOT / "shared" / "src" / "pool" / "table.rs")
    assert '.attribute_name("account")' in code and '.attribute_name("expires")' in code, "the server creates the same"
    def policies(name):
        return {json.dumps(p) for p in FUNCTIONS[name]["Properties"].get("Policies", [])}
    answering = ["ChatCompletionsFunction", "MessagesFunction", "ResponsesFunction",
                 "AudioSpeechFunction", "AudioTranscriptionsFunction"]
    for name in answering:
        assert any("PoolTablePolicy" in p for p in policies(name)), name
        assert not any("PoolViewPolicy" in p for p in policies(name)), name
    assert any("PoolViewPolicy" in p for p in policies("TokenCheckFunction"))
    assert not any("Pool" in p for p in policies("ModelsFunction")), "the model list uses no account"
    assert "ACCOUNTS_TABLE" in TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]


def test_a_created_secret_holds_a_key_the_code_reads_and_no_output_shows_it():
    created = RESOURCES["TokensSecret"]
    generate = created["Properties"]["GenerateSecretString"]
    template = json.loads(generate["SecretStringTemplate"])
    reader = source(ROOT / "shared" / "src" / "credentials" / "secret.rs")
    raw = re.search(r"struct RawTokensDocument \{(.*?)\n\}", reader, re.S).group(1)
    fields = set(re.findall(r"^\s*(\w+): ", raw, re.M))
    assert generate["GenerateStringKey"] in fields, (generate["GenerateStringKey"], fields)
    assert set(template) <= fields and "tokens" in template
    assert generate["PasswordLength"] >= 32
    # The functions read the created secret only when it is created, and the
    # existing one otherwise: the condition of the secret and of its uses agree.
    assert created["Condition"] == "CreateSecret"
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert "TokensSecret" in refs(variables["TOKENS_SECRET_ID"])
    # A secret's value never leaves through an output, a setting or another resource.
    others = [(name, r) for name, r in RESOURCES.items() if r["Type"] != "AWS::SecretsManager::Secret"]
    for where, node in [("Outputs", TEMPLATE["Outputs"]), ("Globals", TEMPLATE["Globals"])] + others:
        text = json.dumps(node)
        assert "resolve:secretsmanager" not in text and "SecretString" not in text, where


SCHEDULE = re.compile(
    r"^(rate\((1 (minute|hour|day)|([2-9]|[1-9]\d+) (minutes|hours|days))\)"
    r"|cron\(\S+ \S+ \S+ \S+ \S+ \S+\))$"
)


@pytest.mark.parametrize(
    "expression,ok",
    [
        ("rate(6 hours)", True),
        ("rate(1 hour)", True),
        ("rate(1 hours)", False),
        ("rate(0 minutes)", False),
        ("cron(0 */6 * * ? *)", True),
        ("cron(0 6 * * *)", False),
        ("every 6 hours", False),
    ],
)
def test_schedule_expressions_parse(expression, ok):
    assert bool(SCHEDULE.match(expression)) == ok


def test_the_dead_tokens_alarm_watches_the_metric_the_check_emits():
    alarm = RESOURCES["DeadTokensAlarm"]["Properties"]
    emf = source(ROOT / "shared" / "src" / "liveness.rs")
    namespace = re.search(r'"Namespace": "([^"]+)"', emf).group(1)
    assert alarm["Namespace"] == namespace
    assert alarm["MetricName"] == "DeadTokens" and '"DeadTokens"' in emf
    service = re.search(r'emf_line\(&report, "([^"]+)"', source(BINARIES["token-liveness"])).group(1)
    assert alarm["Dimensions"] == [{"Name": "Service", "Value": service}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


def test_the_pool_and_refresh_alarms_watch_metrics_the_code_emits():
    metrics = source(ROOT / "shared" / "src" / "metrics.rs")
    assert '"NoUsableAccount"' in metrics and '"Dimensions": [[], names]' in metrics
    alarm = RESOURCES["NoUsableAccountAlarm"]["Properties"]
    assert alarm["MetricName"] == "NoUsableAccount" and "Dimensions" not in alarm, "the total, all upstreams"
    refresh = RESOURCES["RefreshFailuresAlarm"]["Properties"]
    emf = source(ROOT / "shared" / "src" / "liveness.rs")
    assert refresh["MetricName"] == "RefreshFailures" and '"RefreshFailures"' in emf
    assert refresh["Dimensions"] == [{"Name": "Service", "Value": "token-liveness"}]


def test_the_liveness_schedule_parses():
    default = TEMPLATE["Parameters"]["LivenessSchedule"]["Default"]
    assert SCHEDULE.match(default), default
    liveness = [f for f in FUNCTIONS.values() if "Events" in f["Properties"]]
    assert liveness, "a function runs on the schedule"
    for function in liveness:
        for event in function["Properties"]["Events"].values():
            assert event["Type"] == "Schedule"
            assert event["Properties"]["Schedule"] == {"Ref": "LivenessSchedule"}
