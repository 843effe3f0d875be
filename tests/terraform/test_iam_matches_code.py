"""The agent role's IAM policy (terraform/iam.tf) allows exactly the AWS operations the agent calls.

Extraction rule (a convention the agent's code keeps, checked by the tests below):

* Every AWS SDK call lives under src/aws/ and is written on a client field named for its
  service: ``self.elbv2.<operation>()`` (aws_sdk_elasticloadbalancingv2::Client),
  ``self.ec2.<operation>()`` (aws_sdk_ec2::Client) or ``self.sts.<operation>()``
  (aws_sdk_sts::Client). Whitespace and line breaks between the
  parts are allowed (rustfmt splits long chains); comments are ignored.
* No other file in src/ names an SDK client type, and inside src/aws a client of those types is
  stored only in a field named ``elbv2``, ``ec2`` or ``sts`` and never used other than as above
  (no ``let c = &self.ec2``, no passing the client around).
* The SDK's snake_case operation name maps to the IAM action by capitalising each word:
  ``describe_target_health`` -> ``elasticloadbalancing:DescribeTargetHealth``;
  ``create_tags`` -> ``ec2:CreateTags``. SPELLING_EXCEPTIONS covers the operations whose IAM name
  is not that (none of the ones used so far).

Then: every extracted action must be in the policy, and every policy action must be extracted,
except the ones in PLANNED (features whose code has not landed yet). An entry in PLANNED that the
code now calls makes the test fail too, so the list only shrinks.
"""

import pathlib
import re

import hcl2
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
AWS_SRC = REPO / "src" / "aws"
SRC = REPO / "src"
IAM_TF = REPO / "terraform" / "iam.tf"

SERVICE_PREFIX = {"elbv2": "elasticloadbalancing", "ec2": "ec2", "sts": "sts"}
SDK_CLIENT_FIELD = {
    "aws_sdk_elasticloadbalancingv2::Client": "elbv2",
    "aws_sdk_ec2::Client": "ec2",
    "aws_sdk_sts::Client": "sts",
}
# snake_case SDK operation -> IAM action name, where plain capitalisation is wrong.
SPELLING_EXCEPTIONS: dict[str, str] = {}

# Policy actions whose calling code has not landed yet. Remove an entry in the commit that adds
# its call under src/aws/ (the test fails if a PLANNED action is already called).
PLANNED: set[str] = set()

# Actions IAM checks for an option of a call, not for a call of their own, so the extraction can
# never find them; each must name the call that implies it, and that call must be made.
IMPLIED = {
    # AuthorizeSecurityGroupIngress with TagSpecifications (the ownership tags on each rule).
    "ec2:CreateTags": "ec2:AuthorizeSecurityGroupIngress",
}

# Calls IAM never denies: the policy must not list them (nothing to grant), and the code may make them.
NO_PERMISSION_NEEDED = {"sts:GetCallerIdentity"}

CALL = re.compile(r"\bself\s*\.\s*(elbv2|ec2|sts)\s*\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")
FIELD_USE = re.compile(r"\bself\s*\.\s*(elbv2|ec2|sts)\b(?!\s*\.\s*[a-z][a-z0-9_]*\s*\(\s*\))")


def strip_comments(rust: str) -> str:
    """Removes // and /* */ comments, keeping string literals intact enough for our regexes."""
    out, i, n = [], 0, len(rust)
    in_str = False
    while i < n:
        c = rust[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(rust[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
        elif rust.startswith("'\"'", i):  # the char literal '"' opens no string
            out.append("'\"'")
            i += 3
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif rust.startswith("//", i):
            j = rust.find("\n", i)
            i = n if j < 0 else j
        elif rust.startswith("/*", i):
            j = rust.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def iam_action(service: str, op: str) -> str:
    name = SPELLING_EXCEPTIONS.get(op) or "".join(w.capitalize() for w in op.split("_"))
    return f"{SERVICE_PREFIX[service]}:{name}"


def aws_sources() -> dict[pathlib.Path, str]:
    return {p: strip_comments(p.read_text()) for p in sorted(AWS_SRC.rglob("*.rs"))}


def extracted_actions() -> dict[str, list[str]]:
    """IAM action -> places (file:line) that call it."""
    found: dict[str, list[str]] = {}
    for path, text in aws_sources().items():
        for m in CALL.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"{path.relative_to(REPO)}:{line}"
            found.setdefault(iam_action(m.group(1), m.group(2)), []).append(where)
    return found


def unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def policy_statements() -> list[dict]:
    """Statements of data.aws_iam_policy_document.agent, dynamic ones included."""
    doc = hcl2.load(IAM_TF.open())
    for block in doc.get("data", []):
        for kind, by_name in block.items():
            if unquote(kind) != "aws_iam_policy_document":
                continue
            for name, body in by_name.items():
                if unquote(name) != "agent":
                    continue
                stmts = list(body.get("statement", []))
                for dyn in body.get("dynamic", []):
                    for dname, dbody in dyn.items():
                        if unquote(dname) == "statement":
                            stmts.extend(dbody["content"])
                return stmts
    raise AssertionError(f'data "aws_iam_policy_document" "agent" not found in {IAM_TF}')


def policy_actions() -> set[str]:
    actions = set()
    for s in policy_statements():
        assert unquote(s.get("effect", '"Allow"')) == "Allow", f"unexpected effect in {s}"
        assert isinstance(s["actions"], list), f"actions must be a literal list: {s}"
        actions.update(unquote(a) for a in s["actions"])
    return actions


def test_sdk_calls_live_only_in_src_aws_on_conventional_fields():
    assert AWS_SRC.is_dir(), "src/aws/ is missing: the AWS adapters moved? Update this test's paths."
    problems = []
    for path in sorted(SRC.rglob("*.rs")):
        text = strip_comments(path.read_text())
        rel = path.relative_to(REPO)
        for client, field in SDK_CLIENT_FIELD.items():
            if client not in text:
                continue
            if AWS_SRC not in path.parents:
                problems.append(f"{rel}: names {client} outside src/aws/")
                continue
            for m in re.finditer(r"(\w+)\s*:\s*(?:&\s*)?" + re.escape(client), text):
                if m.group(1) != field:
                    problems.append(f"{rel}: a {client} is stored as `{m.group(1)}`, not `{field}`")
    for path, text in aws_sources().items():
        for m in FIELD_USE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(
                f"{path.relative_to(REPO)}:{line}: `self.{m.group(1)}` used other than as "
                f"`self.{m.group(1)}.<operation>()`; the IAM extraction would miss it"
            )
    assert not problems, "AWS SDK call convention broken:\n  " + "\n  ".join(problems)


def test_extraction_finds_calls():
    found = extracted_actions()
    # Guards against a regex that silently stops matching: target registration is the core,
    # and cross-account access goes through AssumeRole.
    assert "elasticloadbalancing:RegisterTargets" in found, found
    assert "sts:AssumeRole" in found, found


def test_policy_allows_exactly_the_called_operations():
    called = {a: w for a, w in extracted_actions().items() if a not in NO_PERMISSION_NEEDED}
    allowed = policy_actions()
    assert not allowed & NO_PERMISSION_NEEDED, f"nothing to grant for {sorted(allowed & NO_PERMISSION_NEEDED)}"
    missing = {a: called[a] for a in sorted(set(called) - allowed)}
    implied = {action for action, by in IMPLIED.items() if by in called}
    unused = sorted(allowed - set(called) - PLANNED - implied)
    implied_missing = sorted(set(implied) - allowed)
    planned_but_called = sorted(PLANNED & set(called))
    planned_not_in_policy = sorted(PLANNED - allowed)
    print("called:", sorted(called))
    print("allowed:", sorted(allowed))
    print("planned (allowed, not called yet):", sorted(PLANNED - set(called)))
    errors = []
    if missing:
        errors.append(f"the code calls actions the policy lacks (add them to terraform/iam.tf): {missing}")
    if unused:
        errors.append(f"the policy allows actions no code calls (remove them, or list them in PLANNED): {unused}")
    if planned_but_called:
        errors.append(f"PLANNED actions are called now; remove them from PLANNED: {planned_but_called}")
    if planned_not_in_policy:
        errors.append(f"PLANNED actions missing from the policy: {planned_not_in_policy}")
    if implied_missing:
        errors.append(f"actions implied by called operations are missing from the policy: {implied_missing}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "service,op,action",
    [
        ("elbv2", "describe_target_health", "elasticloadbalancing:DescribeTargetHealth"),
        ("ec2", "describe_security_group_rules", "ec2:DescribeSecurityGroupRules"),
        ("ec2", "create_tags", "ec2:CreateTags"),
        ("sts", "assume_role", "sts:AssumeRole"),
    ],
)
def test_name_mapping(service, op, action):
    assert iam_action(service, op) == action


def test_extraction_rule_on_samples():
    sample = strip_comments(
        """
        // self.ec2.delete_vpc() is only a comment
        let a = self.elbv2.describe_target_groups().names(n);
        let b = self
            .ec2
            .describe_vpcs()
            .vpc_ids(id);
        let s = "self.ec2.fake_call()"; /* self.ec2.run_instances() */
        let q = '"'; // self.ec2.after_char_literal()
        """
    )
    ops = sorted(iam_action(m.group(1), m.group(2)) for m in CALL.finditer(sample))
    # The string literal is matched too: harmless (over-approximation fails loudly, not silently).
    assert ops == ["ec2:DescribeVpcs", "ec2:FakeCall", "elasticloadbalancing:DescribeTargetGroups"]
    assert not list(FIELD_USE.finditer(sample.replace('"self.ec2.fake_call()"', '""')))
    assert list(FIELD_USE.finditer("let c = &self.ec2;"))


def test_policy_scoping():
    """Writes only on the module's target groups / the listed security groups; Describe on *."""
    for s in policy_statements():
        actions = [unquote(a) for a in s["actions"]]
        resources = s["resources"]
        text = resources if isinstance(resources, str) else " ".join(map(str, resources))
        assert all("*" not in a for a in actions), f"wildcard action in {actions}"
        verbs = {a.split(":")[1] for a in actions}
        if all(v.startswith("Describe") for v in verbs):
            assert [unquote(r) for r in resources] == ["*"], f"Describe statement: {s}"
        elif verbs <= {"RegisterTargets", "DeregisterTargets"}:
            assert "aws_lb_target_group.this" in text and '"*"' not in text, s
        elif verbs <= {"AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"}:
            assert "local.agent_security_group_arns" in text and '"*"' not in text, s
        elif verbs == {"CreateTags", "DeleteTags"}:
            assert "local.security_group_rule_arns" in text, s
            cond = s["condition"][0]
            assert unquote(cond["test"]) == "ForAllValues:StringLike" and unquote(cond["variable"]) == "aws:TagKeys"
            assert sorted(unquote(v) for v in cond["values"]) == [
                "tgb-agent.elbv2.k8s.aws/claim/*", "tgb-agent.elbv2.k8s.aws/cluster"]
        elif actions == ["sts:AssumeRole"]:
            # Exactly the listed roles: never "*", never a pattern.
            assert resources == "${var.cross_account_role_arns}" or text == "var.cross_account_role_arns", s
        elif verbs == {"CreateTags"}:
            assert "local.security_group_rule_arns" in text, s
            cond = s["condition"][0]
            assert unquote(cond["variable"]) == "ec2:CreateAction"
            assert [unquote(v) for v in cond["values"]] == ["AuthorizeSecurityGroupIngress"]
        else:
            pytest.fail(f"statement mixes reads and writes or has unknown actions: {actions}")


def test_role_gets_no_other_policy():
    """The inline policy is the role's only permission source."""
    attach_kinds = {
        "aws_iam_role_policy_attachment",
        "aws_iam_policy_attachment",
        "aws_iam_role_policies_exclusive",
        "aws_iam_role_policy_attachments_exclusive",
        "aws_iam_policy",
    }
    role_policies = []
    for tf in sorted((REPO / "terraform").glob("*.tf")):
        for block in hcl2.load(tf.open()).get("resource", []):
            for kind, by_name in block.items():
                kind = unquote(kind)
                assert kind not in attach_kinds, f"{tf.name}: {kind} would widen the agent role"
                if kind == "aws_iam_role_policy":
                    role_policies.extend(by_name.values())
    assert len(role_policies) == 1
    assert "data.aws_iam_policy_document.agent.json" in role_policies[0]["policy"]


def test_cross_account_roles_are_listed_arns_without_wildcards():
    """sts:AssumeRole reaches only var.cross_account_role_arns, whose validation refuses patterns."""
    doc = hcl2.load((REPO / "terraform" / "variables.tf").open())
    variables = {unquote(k): v for block in doc.get("variable", []) for k, v in block.items()}
    var = variables["cross_account_role_arns"]
    assert unquote(var["default"]) == [] or var["default"] == []
    condition = str(var["validation"][0]["condition"])
    assert "iam::[0-9]{12}:role/" in condition and "*" not in condition.replace(".+", ""), condition
