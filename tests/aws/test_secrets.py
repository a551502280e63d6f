"""Secrets live in SSM as SecureStrings under /maha/<env>/, are made once, and never printed."""

from __future__ import annotations

from mahaops import masking
from mahaops.aws.secrets import SsmSecretStore
from mahaops.secrets import SecretStore, get_or_create


def test_secret_is_a_tagged_securestring_under_the_environment(aws):
    store = SsmSecretStore("qa", client=aws.client("ssm"), project="maha")
    store.put("db_password", "correct-horse-battery")
    ssm = aws.client("ssm")
    parameter = ssm.get_parameter(Name="/maha/qa/db_password")["Parameter"]
    assert parameter["Type"] == "SecureString"
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/maha/qa/db_password")[
        "TagList"
    ]
    assert {"Key": "Environment", "Value": "qa"} in tags
    assert store.get("db_password") == "correct-horse-battery"


def test_secret_is_generated_once_and_reused(aws):
    store: SecretStore = SsmSecretStore("qa", client=aws.client("ssm"), project="maha")
    first = get_or_create(store, "session_secret")
    assert get_or_create(store, "session_secret") == first
    assert store.get("missing_one") is None


def test_rewriting_a_secret_overwrites_it(aws):
    store = SsmSecretStore("qa", client=aws.client("ssm"), project="maha")
    store.put("api_token", "first-value-123")
    store.put("api_token", "second-value-456")
    assert store.get("api_token") == "second-value-456"


def test_secret_values_are_masked_in_output(aws):
    store = SsmSecretStore("qa", client=aws.client("ssm"), project="maha")
    store.put("redis_password", "s3cr3t-redis-value")
    assert masking.mask("auth s3cr3t-redis-value") == f"auth {masking.MASK}"


def test_secrets_carry_the_platform_name_not_a_fixed_one(aws, provision_qa, write_group_data):
    # platform_name names SSM paths and the Project tag, as it names every other resource.
    group_data = write_group_data()
    (group_data / "all.py").write_text('platform_name = "acme"\n')
    provision_qa(group_data=group_data)
    ssm = aws.client("ssm")
    names = [
        p["Name"]
        for p in ssm.get_parameters_by_path(Path="/acme/qa/", Recursive=True)["Parameters"]
    ]
    assert "/acme/qa/cloudfront_private_key" in names
    assert not ssm.get_parameters_by_path(Path="/maha/", Recursive=True)["Parameters"]
    tags = ssm.list_tags_for_resource(
        ResourceType="Parameter", ResourceId="/acme/qa/cloudfront_private_key"
    )["TagList"]
    assert {"Key": "Project", "Value": "acme"} in tags


def test_no_host_role_may_read_the_platforms_secrets(aws, provision_qa, monkeypatch):
    # Deploys render secrets from the operator's machine; hosts never read SSM. With
    # access="ssm" every role carries AmazonSSMManagedInstanceCore (GetParameter* on *):
    # an explicit deny on the platform's parameters wins over it, for every role.
    from .test_inventory import SSM_AGENT

    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    provision_qa(access="ssm", admin_cidrs=[], **SSM_AGENT)
    iam = aws.client("iam")
    for role in ("maha-qa-app", "maha-qa-db", "maha-qa-node"):
        document = iam.get_role_policy(RoleName=role, PolicyName="no-secrets")["PolicyDocument"]
        (statement,) = document["Statement"]
        assert statement["Effect"] == "Deny"
        assert "ssm:GetParameter" in statement["Action"]
        assert "ssm:GetParametersByPath" in statement["Action"]
        assert statement["Resource"] == "arn:aws:ssm:*:123456789012:parameter/maha/*"
